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
    for batch in progress(inputs, "calibrating (GPTQ Hessians)", progress):
        ex(batch if isinstance(batch, dict) else (batch if isinstance(batch, (list, tuple)) else [batch]))
    return {k: h / counts[k] for k, h in hessians.items()}


def text_calibration(tokenizer, text: str | None = None, sequences: int = 4, length: int = 512,
                     skip: int = 0) -> list[list[np.ndarray]]:
    """Calibration inputs from text: ``sequences`` windows of ``length`` token ids (after ``skip`` tokens).

    The default text is Python's own ``pydoc_data.topics``, which every Python installation carries."""
    if text is None:
        import pydoc_data.topics

        text = "\n\n".join(pydoc_data.topics.topics.values())
    ids = np.asarray(tokenizer(text)["input_ids"], np.int64).reshape(-1)
    need = skip + sequences * length
    if len(ids) < need:
        raise ValueError(f"the calibration text has {len(ids)} tokens, {need} are needed")
    return [[ids[skip + i * length: skip + (i + 1) * length][None]] for i in range(sequences)]


def progress(items, label: str, enabled: bool):
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(list(items), description=label, transient=True)
