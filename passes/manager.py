"""Pass infrastructure: passes declare their contract, a manager runs them with instruments between.

A pass is in place (mutates the graph it is given) or functional (returns a new graph). ``requires`` names
properties that earlier passes must have established, ``ensures`` the ones it establishes. The verifier
runs after every pass that changed the graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..ir.graph import Graph
from ..ir.verifier import verify


@dataclass
class PassResult:
    graph: Graph
    changed: bool


class Pass:
    name: str = "pass"
    in_place: bool = True
    requires: frozenset[str] = frozenset()
    ensures: frozenset[str] = frozenset()

    def run(self, g: Graph) -> bool | PassResult:
        """In-place passes return whether they changed ``g``; functional ones return a PassResult."""
        raise NotImplementedError

    def __call__(self, g: Graph) -> PassResult:
        out = self.run(g)
        if isinstance(out, PassResult):
            return out
        if not self.in_place:
            raise TypeError(f"functional pass {self.name} must return a PassResult")
        return PassResult(g, bool(out))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class FunctionPass(Pass):
    """An in-place pass from a function ``fn(g) -> changed``."""

    def __init__(self, name: str, fn: Callable[[Graph], bool], requires=(), ensures=()):
        self.name, self.fn = name, fn
        self.requires, self.ensures = frozenset(requires), frozenset(ensures)

    def run(self, g: Graph) -> bool:
        return self.fn(g)


class PassContractError(RuntimeError):
    pass


class PassInstrument:
    """Hooks around every pass (TVM's PassInstrument)."""

    def before_pass(self, index: int, p: Pass, g: Graph) -> None: ...
    def after_pass(self, index: int, p: Pass, result: PassResult) -> None: ...
    def on_failure(self, index: int, p: Pass, g: Graph, error: BaseException) -> None: ...
    def on_start(self, g: Graph) -> None: ...


class PassManager:
    def __init__(self, passes: Sequence[Pass], instruments: Sequence[PassInstrument] = (),
                 verify_each: bool = True, properties: Sequence[str] = ()):
        self.passes = list(passes)
        self.instruments = list(instruments)
        self.verify_each = verify_each
        self.initial = frozenset(properties)
        self._check_contracts()

    def _check_contracts(self) -> None:
        have = set(self.initial)
        for p in self.passes:
            missing = p.requires - have
            if missing:
                raise PassContractError(f"pass {p.name} requires {sorted(missing)}, which no earlier pass "
                                        f"ensures (pipeline: {[q.name for q in self.passes]})")
            have |= p.ensures

    def run(self, g: Graph) -> Graph:
        for ins in self.instruments:
            ins.on_start(g)
        for i, p in enumerate(self.passes, start=1):
            for ins in self.instruments:
                ins.before_pass(i, p, g)
            try:
                result = p(g)
                if result.changed and self.verify_each:
                    verify(result.graph)
            except BaseException as e:
                for ins in self.instruments:
                    ins.on_failure(i, p, g, e)
                raise
            for ins in self.instruments:
                ins.after_pass(i, p, result)
            g = result.graph
        return g
