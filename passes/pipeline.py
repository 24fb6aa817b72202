"""The standard pass pipelines, as named lists: what ``lutc.compile`` runs, in order."""
from __future__ import annotations

from .dce import DeadCodeElimination
from .fold import ConstantFolding
from .infer_shapes import InferShapes
from .manager import Pass
from .quantize.rewrite import Quantize
from .rewrite import RewritePass
from .rules import CANONICAL_RULES


def canonicalize() -> list[Pass]:
    """Graph-level cleanup every target wants: types, folded shapes, fused ops, no dead code."""
    return [
        InferShapes(),
        ConstantFolding(),
        RewritePass("canonicalize", CANONICAL_RULES),
        ConstantFolding(),
        DeadCodeElimination(),
    ]


def quantize(config, progress: bool = False) -> list[Pass]:
    """Linear layers -> LUT ops (nothing when ``config`` is None)."""
    if config is None:
        return []
    from .quantize.config import QuantConfig

    if not isinstance(config, QuantConfig):
        raise TypeError(f"quant must be a lutc.QuantConfig, got {type(config).__name__}")
    from .quantize.float_weights import FloatWeights

    return [Quantize(config, progress=progress), FloatWeights(config.float_dtype)]
