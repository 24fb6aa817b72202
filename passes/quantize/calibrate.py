"""Calibration for GPTQ: the Hessian X^T X of every quantized layer's input, from real model inputs."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...ir.graph import Graph
from ...ir.ops import Op


def collect_hessians(g: Graph, inputs: Sequence, weight_keys: set[str], progress: bool = True) -> dict[str, np.ndarray]:
    """Run the float graph on each calibration input; accumulate X^T X per linear weight key."""
    from ...codegen.reference.executor import Executor

    hessians: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    key_of = {n.name: g.node(n.inputs[1].node).attrs.get("ref") for n in g.nodes() if n.op is Op.LINEAR}

    def observe(node, outs, ins):
        key = key_of.get(node.name)
        if key in weight_keys:
            x = ins[0].reshape(-1, ins[0].shape[-1]).astype(np.float64)
            hessians[key] = hessians.get(key, 0) + x.T @ x
            counts[key] = counts.get(key, 0) + x.shape[0]

    ex = Executor(g, observer=observe)
    for batch in _progress(inputs, "calibrating (GPTQ Hessians)", progress):
        ex(batch if isinstance(batch, dict) else (batch if isinstance(batch, (list, tuple)) else [batch]))
    return {k: h / counts[k] for k, h in hessians.items()}


def _progress(items, label: str, enabled: bool):
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(list(items), description=label, transient=True)
