"""The standard pass pipelines, as named lists: what ``lutc.compile`` runs, in order."""
from __future__ import annotations

from .dce import DeadCodeElimination
from .fold import ConstantFolding
from .infer_shapes import InferShapes
from .manager import Pass
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
