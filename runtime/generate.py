"""Greedy generation over a model with a KV cache (inputs ``input_ids`` and ``past_*``, outputs ``logits`` and
``present_*``): a prefill call for the prompt, then one decode call per token. A model without cache inputs
is re-run on the whole sequence at every step."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Generation:
    prompt: list[int]
    tokens: list[int] = field(default_factory=list)
    prefill_s: float = 0.0
    decode_s: float = 0.0
    step_s: list[float] = field(default_factory=list)   # each decode step's time

    @property
    def steady_tokens_per_s(self) -> float:
        """Decode tokens/s of the median step: without one-off costs (a CUDA graph's capture, first calls)."""
        return 1.0 / float(np.median(self.step_s)) if self.step_s else float("nan")

    @property
    def prefill_tokens_per_s(self) -> float:
        return len(self.prompt) / self.prefill_s if self.prefill_s else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        n = len(self.tokens) - 1  # the first new token comes out of the prefill call
        return n / self.decode_s if n > 0 and self.decode_s else float("nan")


def generate(run: Callable[[dict], list], input_specs: list[dict], output_names: list[str], prompt,
             max_new_tokens: int, max_positions: int | None = None, eos_token_id: int | None = None,
             on_token: Callable[[int], None] | None = None) -> Generation:
    """``run(inputs by name) -> outputs`` as the model's outputs list (logits first)."""
    prompt = [int(t) for t in np.asarray(prompt).reshape(-1)]
    if not prompt:
        raise ValueError("the prompt is empty")
    if max_positions is not None and len(prompt) + max_new_tokens > max_positions:
        raise ValueError(f"a prompt of {len(prompt)} tokens plus {max_new_tokens} new ones exceeds the model's "
                         f"context of {max_positions} positions")
    pasts = {s["name"]: np.zeros([1 if d == "batch" else 0 if d == "past" else d for d in s["shape"]], np.float32)
             for s in input_specs if s["name"].startswith("past_")}
    cached = bool(pasts)
    out = Generation(prompt)
    ids = np.asarray([prompt], np.int64)
    t0 = time.perf_counter()
    for step in range(max_new_tokens):
        outs = run({"input_ids": ids, **pasts})
        token = int(outs[0][0, -1].argmax())  # numpy, or a device tensor
        t1 = time.perf_counter()
        if step == 0:
            out.prefill_s = t1 - t0
        else:
            out.decode_s += t1 - t0
            out.step_s.append(t1 - t0)
        t0 = t1
        out.tokens.append(token)
        if on_token is not None:
            on_token(token)
        if token == eos_token_id:
            break
        if cached:
            pasts = {n.replace("present_", "past_", 1): v for n, v in zip(output_names, outs) if n.startswith("present_")}
            ids = np.asarray([[token]], np.int64)
        else:
            ids = np.concatenate([ids, [[token]]], axis=1)
    return out
