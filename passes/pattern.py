"""Patterns over the graph, and rewrite rules built from them (onnxscript's rewriter, tinygrad's PatternMatcher).

A rule is data: a pattern plus a replacement function that returns the new value, or None when the
match is not applicable after all. Rules are grouped in rule sets and applied by :class:`RewritePass`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from ..ir import dims as D
from ..ir.graph import Graph, Node, Ref
from ..ir.ops import Op

COMMUTATIVE = frozenset({Op.ADD, Op.MUL, Op.MAX, Op.MIN, Op.EQUAL, Op.AND, Op.OR})


class Pat:
    """Matches a value produced by a node whose op is in ``ops`` with inputs matching ``inputs``.

    ``name`` binds the matched value; ``where(node)`` filters on attributes.
    """

    def __init__(self, ops, *inputs: "Pat", name: str | None = None,
                 where: Callable[[Node], bool] | None = None):
        self.ops = frozenset([ops]) if isinstance(ops, Op) else frozenset(ops)
        self.inputs, self.name, self.where = inputs, name, where

    def match(self, g: Graph, ref: Ref, m: "Match") -> bool:
        node = g.node(ref.node)
        if node.op not in self.ops or len(node.inputs) != len(self.inputs):
            return False
        if self.where is not None and not self.where(node):
            return False
        orders = [node.inputs]
        if node.op in COMMUTATIVE and len(node.inputs) == 2:
            orders.append(node.inputs[::-1])
        for ins in orders:
            trial = m.fork()
            if all(p.match(g, r, trial) for p, r in zip(self.inputs, ins)) and trial.bind(self.name, ref):
                m.absorb(trial)
                return True
        return False


class OneOf(Pat):
    """Matches the first alternative that matches (the order is the priority)."""

    def __init__(self, *alternatives: Pat):
        self.alternatives = alternatives
        self.ops = frozenset().union(*(a.ops for a in alternatives if isinstance(a, Pat) and hasattr(a, "ops")))

    def match(self, g, ref, m):
        for alt in self.alternatives:
            trial = m.fork()
            if alt.match(g, ref, trial):
                m.absorb(trial)
                return True
        return False


class Any(Pat):
    """Matches any value; the same name twice must be the same value."""

    def __init__(self, name: str | None = None):
        self.name = name

    def match(self, g, ref, m):
        return m.bind(self.name, ref)


class Const(Pat):
    """Matches a constant, optionally only when ``value_ok(array)`` holds."""

    def __init__(self, name: str | None = None, value_ok: Callable[[np.ndarray], bool] | None = None):
        self.name, self.value_ok = name, value_ok

    def match(self, g, ref, m):
        v = g.const_value(ref)
        if v is None or (self.value_ok is not None and (v.dtype == object or not self.value_ok(v))):
            return False
        return m.bind(self.name, ref)


def scalar(x: float, tol: float = 1e-6) -> Callable[[np.ndarray], bool]:
    """A constant predicate: every element equals ``x`` (to ``tol`` relative; exactly when ``x`` is 0)."""
    return lambda v: v.size >= 1 and bool(np.all(np.abs(v.astype(np.float64) - x) <= tol * abs(x)))


@dataclass
class Match:
    g: Graph
    refs: dict[str, Ref] = field(default_factory=dict)

    def fork(self) -> "Match":
        return Match(self.g, dict(self.refs))

    def absorb(self, other: "Match") -> None:
        self.refs = other.refs

    def bind(self, name: str | None, ref: Ref) -> bool:
        if name is None:
            return True
        if name in self.refs:
            return self.refs[name] == ref
        self.refs[name] = ref
        return True

    def __getitem__(self, name: str) -> Ref:
        return self.refs[name]

    def __contains__(self, name: str) -> bool:
        return name in self.refs

    def node(self, name: str) -> Node:
        return self.g.node(self.refs[name].node)

    def const(self, name: str) -> np.ndarray:
        return self.g.const_value(self.refs[name])


@dataclass
class Rule:
    name: str
    pattern: Pat
    rewrite: Callable[[Graph, Match], "Ref | None"]

    def apply(self, g: Graph, node: Node) -> Ref | None:
        if len(node.types) != 1:
            return None
        m = Match(g)
        if not self.pattern.match(g, node.out, m):
            return None
        return self.rewrite(g, m)


def rule(name: str, pattern: Pat):
    """Decorator: ``@rule("silu", Pat(Op.MUL, ...))`` over ``def rewrite(g, m) -> Ref | None``."""
    return lambda fn: Rule(name, pattern, fn)


def same_type(g: Graph, a: Ref, b: Ref) -> bool:
    ta, tb = g.type_of(a), g.type_of(b)
    return ta.dtype == tb.dtype and ta.rank == tb.rank and all(D.equal(x, y) for x, y in zip(ta.shape, tb.shape))


class RuleSet:
    def __init__(self, name: str, rules: Iterable[Rule]):
        self.name, self.rules = name, list(rules)
        self.by_op: dict[Op, list[Rule]] = {}
        for r in self.rules:
            ops = set(Op) if isinstance(r.pattern, (Any, Const)) else r.pattern.ops
            for op in ops:
                self.by_op.setdefault(op, []).append(r)

    def __iter__(self):
        return iter(self.rules)

    def __add__(self, other: "RuleSet") -> "RuleSet":
        return RuleSet(f"{self.name}+{other.name}", self.rules + other.rules)
