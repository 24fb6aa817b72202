"""Rule sets: data, applied by :class:`lutc.passes.rewrite.RewritePass`."""
from .fusion import FUSION_RULES
from .linear import LINEAR_RULES
from .no_op import NO_OP_RULES

CANONICAL_RULES = NO_OP_RULES + LINEAR_RULES + FUSION_RULES

__all__ = ["CANONICAL_RULES", "FUSION_RULES", "LINEAR_RULES", "NO_OP_RULES"]
