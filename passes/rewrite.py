"""Apply rule sets to a fixpoint."""
from __future__ import annotations

from ..ir.graph import Graph
from .dce import eliminate_dead_code
from .manager import Pass
from .pattern import RuleSet, same_type


class RuleTypeError(RuntimeError):
    pass


def apply_rules(g: Graph, rules: RuleSet, max_iters: int = 20) -> dict[str, int]:
    """Rewrite until no rule applies; returns how often each rule fired."""
    fired: dict[str, int] = {}
    for _ in range(max_iters):
        changed = False
        for node in g.nodes():
            if node.name not in g:
                continue
            for r in rules.by_op.get(node.op, ()):
                new = r.apply(g, node)
                if new is None or new == node.out:
                    continue
                if not same_type(g, node.out, new):
                    raise RuleTypeError(f"rule {r.name} replaced {node.name}: {node.type} with "
                                        f"{new}: {g.type_of(new)}")
                g.replace_uses(node.out, new)
                fired[r.name] = fired.get(r.name, 0) + 1
                changed = True
                break
        if not changed:
            break
        eliminate_dead_code(g)
    return fired


class RewritePass(Pass):
    def __init__(self, name: str, rules: RuleSet):
        self.name, self.rules = name, rules
        self.fired: dict[str, int] = {}

    def run(self, g: Graph) -> bool:
        self.fired = apply_rules(g, self.rules)
        return bool(self.fired)
