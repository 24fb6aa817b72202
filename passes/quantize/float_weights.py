"""The float16 pass: the weights of the linear layers a QuantConfig leaves in float (the lm_head by default, and
with it a tied embedding) rounded to float16 values, their constants marked ``storage="float16"``.

Why: in a quantized small model the float lm_head is most of a decode step's reads (SmolLM2-135M at 2 bits: 113 MB
of float32 head against ~30 MB of packed layers; 60% of the step). Rounded here, in the graph, every backend and the
reference executor compute with the same numbers; a backend that sees the mark may store the constant in half the
bytes (the CPU target does: ``linear_f16`` / ``gather_f16`` steps). A float16 weight is within 2^-11 of the float32
one (relative; 2^-25 absolute below float16's normal range), far below the error of the quantized layers around it.
"""
from __future__ import annotations

import numpy as np

from ...ir.graph import Graph
from ...ir.ops import Op
from ..manager import Pass
from .config import FLOAT_DTYPES

STORAGE = "storage"   # the constant attribute: its values fit this dtype exactly


def float_linear_weights(g: Graph):
    """The CONST nodes (stored weights, 2-D float32) that a linear layer still reads as its weight."""
    seen = set()
    for node in g.nodes():
        if node.op is Op.LINEAR:
            w = g.node(node.inputs[1].node)
            if w.op is Op.CONST and "ref" in w.attrs and w.name not in seen:
                arr = g.weights[w.attrs["ref"]]
                if arr.dtype == np.float32 and arr.ndim == 2:
                    seen.add(w.name)
                    yield w


class FloatWeights(Pass):
    name = "float16_weights"
    requires = frozenset({"quantized"})

    def __init__(self, dtype: str = "float16"):
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"float weights are kept as one of {FLOAT_DTYPES}, got {dtype!r}")
        self.dtype = dtype

    def run(self, g: Graph) -> bool:
        if self.dtype == "float32":
            return False
        changed = False
        for w in list(float_linear_weights(g)):
            if w.attrs.get(STORAGE) == "float16":
                continue
            key = w.attrs["ref"]
            arr = g.weights[key]
            if np.abs(arr).max(initial=0.0) > np.finfo(np.float16).max:
                continue   # out of float16's range: left as it is
            g.weights[key] = arr.astype(np.float16).astype(np.float32)   # a new array: the caller's stays
            w.attrs[STORAGE] = "float16"
            changed = True
        return changed
