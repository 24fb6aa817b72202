"""Decode steps replayed from CUDA graphs: one graph launch per token instead of a few hundred kernel calls
through Python.

A decode step calls the same kernels with the same buffers every token, except where the cache position
enters: the KV appends (written at it), the RoPE table slices (read at it) and attention (over the filled
positions). In a graph those read the position from device memory (``DeviceScalars.position``, set before
each replay): the appends write with ``index_copy_``, the slices gather, and attention spans a fixed bucket
of the cache (a power of two) and masks the positions not filled yet (``n_valid``). A graph per bucket,
captured the second time a step of the same shapes comes (prompts of one-off lengths run eagerly), replayed
after.

One graph lives at a time: TVM's workspace pool (the ops library's scratch buffers) frees and reallocates a
page when a call needs a bigger one, so any eager step or the warm-up of a new capture may move the scratch
an older graph baked in. Positions only grow within a generation, so the older bucket is not needed again;
before a capture, the step runs once uncaptured at the bucket's size, which sizes the pool (no allocation
inside the capture).

Only steps over the runtime's in-place caches (the pasts are the filled views ``KvCaches`` handed out) are
replayed; anything else runs eagerly, as does a program where the position enters another op (the reason is
kept in ``DecodeGraphs.blocker``).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from . import dims
from .decode import DecodeReplay, mentions
from .kernels import KERNELS

MIN_SPAN = 64   # the smallest bucket of cache positions a graph's attention spans


def _torch():
    import torch

    return torch


class GraphUnsupported(Exception):
    """This step cannot be replayed from a graph (it runs eagerly)."""


def _append(interp):
    """kv_append in a graph: the new positions written at the device position, the bucket returned."""
    kv, sc = interp.kv, interp.scalars

    def run(attrs, ins, dim):
        past, new = ins
        buf = kv.owner(past)
        if buf is None:
            raise GraphUnsupported("a past is not the filled view of a cache buffer")
        idx = sc.position + _torch().arange(new.shape[2], device=buf.device)
        buf.index_copy_(2, idx, new.to(buf.dtype))
        return buf[:, :, :sc.span]
    return run


def _shifted_slice(interp, symbol: str):
    """A slice whose window moves with the position (``[past, past + seq)`` of the RoPE tables): a gather at
    the device position. The window must move one for one with the position and keep its length."""
    sc = interp.scalars

    def run(attrs, ins, dim):
        x = ins[0]
        axes = attrs.get("axes") or list(range(len(attrs["starts"])))
        steps = attrs.get("steps") or [1] * len(axes)
        p = sc.env[symbol]
        later = dict(sc.env, **{symbol: p + 1})
        fixed = {"axes": [], "starts": [], "ends": [], "steps": []}   # axes the position does not move
        for ax, start, end, step in zip(axes, attrs["starts"], attrs["ends"], steps):
            if not mentions([start, end], frozenset([symbol])):
                for k, v in zip(fixed, (ax, start, end, step)):
                    fixed[k].append(v)
                continue
            ax %= x.ndim
            s0, e0 = dim(start), dim(end)
            s1, e1 = (dims.evaluate(v, later) if isinstance(v, str) else int(v) for v in (start, end))
            if step != 1 or s1 - s0 != 1 or e1 - e0 != 1 or not 0 <= s0 <= e0 <= x.shape[ax]:
                raise GraphUnsupported(f"slice [{start}, {end}) does not move with {symbol}")
            n, shift = e0 - s0, s0 - p
            sc.limit = min(sc.limit, x.shape[ax] - n - shift)   # the last position the table covers
            x = x.index_select(ax, sc.position + _torch().arange(shift, shift + n, device=x.device))
        return KERNELS["slice"](fixed, [x], dim) if fixed["axes"] else x
    return run


@dataclass
class Captured:
    graph: object
    static: list          # the graph's inputs (copied into before a replay)
    outputs: list         # its outputs (presents are re-viewed after a replay)
    limit: float          # the last cache position every gather covers


class DecodeGraphs(DecodeReplay):
    """The decode graphs of one interpreter (runtime/cuda.py), by input shapes and cache bucket."""

    def __init__(self, interp):
        super().__init__(interp)
        append, shifted = _append(interp), _shifted_slice(interp, self.site.symbol)
        symbols = frozenset([self.site.symbol])

        def kernel(fn, step):   # the steps the position enters; the others run as in the eager plan
            if step.kernel == "kv_append":
                return append
            return shifted if step.kernel == "slice" and mentions(step.attrs, symbols) else fn
        self.plan = [(kernel(fn, st), st, ins, outs, free) for fn, st, ins, outs, free in interp.plan]
        self.current: tuple[tuple, Captured] | None = None   # (shapes key, span) and its graph
        self.captures = 0

    def forget(self) -> None:
        """Drop the graph (an eager step may have moved the scratch buffers it uses)."""
        super().forget()
        self.current = None

    def replayed(self, arrays: list, env: dict, key: tuple, p: int, s: int, bufs: dict) -> list | None:
        capacity = min(b.shape[2] for b in bufs.values())
        span = min(capacity, max(MIN_SPAN, 1 << (p + s - 1).bit_length()))
        if not self._ids_in_range(arrays):
            return None
        if self.current is None or self.current[0] != (key, span):
            self.current = None
            captured = self._capture(arrays, env, span, p, s)
            if captured is None:
                return None
            self.current = ((key, span), captured)
        captured = self.current[1]
        if p + s - 1 > captured.limit:
            return None
        return self._replay(captured, arrays, p, s, bufs)

    def trace(self, arrays: list, env: dict[str, int], span: int, s: int) -> tuple[list, float]:
        """Run the graph variant of the plan (what a capture records) for a step adding ``s`` positions: the
        outputs and the last position the step can take."""
        sc = self.interp.scalars
        sc.graphing, sc.span, sc.env, sc.limit = True, span, env, math.inf
        _torch().add(sc.position, s, out=sc.n_valid)
        try:
            outs = self.interp.execute(self.plan, arrays, env)
        finally:
            sc.graphing = False
        return outs, sc.limit

    def _capture(self, arrays: list, env: dict[str, int], span: int, p: int, s: int) -> Captured | None:
        pasts = set(self.site.pasts.values())
        static = [a if i in pasts else a.clone() for i, a in enumerate(arrays)]
        try:
            self.interp.scalars.position.fill_(p)
            self.trace(static, env, span, s)   # warm-up at the bucket's size (the replay redoes this step)
            graph, outs, limit = self.record(static, env, span, s)
        except GraphUnsupported as e:
            self.blocker = str(e)
            return None
        except RuntimeError as e:   # a kernel or call the capture refused: run eagerly from now on
            self.blocker = f"capturing the decode step failed: {e}"
            warnings.warn(f"CUDA graphs are off for this model: {self.blocker}", RuntimeWarning, stacklevel=3)
            return None
        self.captures += 1
        return Captured(graph, static, outs, limit)

    def record(self, static: list, env: dict[str, int], span: int, s: int) -> tuple[object, list, float]:
        """Capture the traced step into a CUDA graph (TVM's kernels launched on the capturing stream)."""
        import tvm_ffi

        torch = _torch()
        graph = torch.cuda.CUDAGraph()
        # capture_begin/end on a side stream rather than torch.cuda.graph(), which also runs gc.collect()
        # and empties the allocator's cache at every capture (tens of ms in a 32-token generation). Each
        # graph gets a memory pool of its own: a pool shared with a dropped graph trips the allocator
        # ("use_count > 0") unless the cache is emptied first.
        side, main = torch.cuda.Stream(), torch.cuda.current_stream()
        side.wait_stream(main)
        with torch.cuda.stream(side), tvm_ffi.use_torch_stream():
            graph.capture_begin(capture_error_mode="relaxed")
            try:
                outs, limit = self.trace(static, env, span, s)
            finally:
                graph.capture_end()
        main.wait_stream(side)
        return graph, outs, limit

    def _replay(self, c: Captured, arrays: list, p: int, s: int, bufs: dict) -> list:
        pasts = set(self.site.pasts.values())
        for i, a in enumerate(arrays):
            if i not in pasts:
                c.static[i].copy_(a)
        self.interp.scalars.position.fill_(p)
        c.graph.replay()
        return self.finish([o.clone() if j not in self.site.pasts else o for j, o in enumerate(c.outputs)], p, s, bufs)

    def _ids_in_range(self, arrays: list) -> bool:
        """Token ids are checked before a replay (the graph's gather cannot raise)."""
        for slot, vocab in self.site.ids:
            ids = arrays[slot]
            if ids.numel():
                lo, hi = (int(v) for v in ids.aminmax())
                if lo < 0 or hi >= vocab:
                    return False   # the eager step raises the clear error
        return True
