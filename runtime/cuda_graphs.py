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
import re
import warnings
from dataclasses import dataclass, field

from typing import Mapping

from . import dims
from .kernels import KERNELS
from .program import Program, bind_inputs

MIN_SPAN = 64   # the smallest bucket of cache positions a graph's attention spans


def _torch():
    import torch

    return torch


class GraphUnsupported(Exception):
    """This step cannot be replayed from a graph (it runs eagerly)."""


def _mentions(obj, symbols: frozenset[str]) -> bool:
    if isinstance(obj, str):
        return any(t in symbols for t in re.findall(r"[A-Za-z_]\w*", obj))
    if isinstance(obj, dict):
        return any(_mentions(v, symbols) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_mentions(v, symbols) for v in obj)
    return False


def _is_attention(step) -> bool:
    return step.attrs.get("tvm", {}).get("kind") == "attention"


@dataclass
class DecodeSite:
    """Where the cache position enters a program."""
    symbol: str = ""                                       # the past length's dim name ("past")
    pasts: dict[int, int] = field(default_factory=dict)    # output index of a present -> input slot of its past
    ids: list[tuple[int, int]] = field(default_factory=list)   # (input slot, vocabulary) of embedded token ids
    blocker: str | None = None                             # why no step of this program is replayed


def analyse(program: Program) -> DecodeSite:
    site = DecodeSite()
    slots = {s["name"]: i for i, s in enumerate(program.inputs)}
    appends = [s for s in program.steps if s.kernel == "kv_append"]
    if not appends:
        site.blocker = "the program has no KV cache"
        return site
    lengths = {program.inputs[slots[s.inputs[0]]]["shape"][2] for s in appends if s.inputs[0] in slots}
    if len(lengths) != 1 or any(s.inputs[0] not in slots for s in appends):
        site.blocker = "the KV appends do not all extend past inputs of one length"
        return site
    (symbol,) = lengths
    if not isinstance(symbol, str) or not symbol.isidentifier():
        site.blocker = f"the past length is {symbol!r}, not a dim of its own"
        return site
    site.symbol = symbol
    symbols = frozenset([symbol])
    present = {s.outputs[0]: s for s in appends}
    outputs = {o["value"]: j for j, o in enumerate(program.outputs)}
    site.pasts = {outputs[v]: slots[s.inputs[0]] for v, s in present.items() if v in outputs}
    pasts = {s.inputs[0] for s in appends}
    dependent = {v for v, c in program.constants.items() if c.get("symbolic") and _mentions(c["value"], symbols)}
    for step in program.steps:
        if step.kernel == "kv_append":
            continue
        if pasts & set(step.inputs):
            site.blocker = f"{step.kernel} {step.name} reads a past cache input"
        elif any(v in present for v in step.inputs) and not (
                _is_attention(step) and not {step.inputs[0]} & set(present)):
            site.blocker = f"{step.kernel} {step.name} reads a KV cache (only attention may)"
        elif (_mentions(step.attrs, symbols) or dependent & set(step.inputs)) and step.kernel != "slice":
            site.blocker = f"{step.kernel} {step.name} depends on the cache length"
        if site.blocker:
            return site
        if step.attrs.get("tvm", {}).get("kind") == "embedding" and step.inputs[1] in slots:
            site.ids.append((slots[step.inputs[1]], step.attrs["tvm"]["params"]["vocab"]))
    return site


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
            if not _mentions([start, end], frozenset([symbol])):
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
class _Last:
    presents: dict[int, object]   # input slot -> the present it handed out (the next step's past)
    key: tuple
    bufs: dict
    env: dict


@dataclass
class Captured:
    graph: object
    static: list          # the graph's inputs (copied into before a replay)
    outputs: list         # its outputs (presents are re-viewed after a replay)
    limit: float          # the last cache position every gather covers


class DecodeGraphs:
    """The decode graphs of one interpreter (runtime/cuda.py), by input shapes and cache bucket."""

    def __init__(self, interp):
        self.interp, self.site = interp, analyse(interp.program)
        self.blocker = self.site.blocker
        append, shifted = _append(interp), _shifted_slice(interp, self.site.symbol)
        symbols = frozenset([self.site.symbol])

        def kernel(fn, step):   # the steps the position enters; the others run as in the eager plan
            if step.kernel == "kv_append":
                return append
            return shifted if step.kernel == "slice" and _mentions(step.attrs, symbols) else fn
        self.plan = [(kernel(fn, st), st, ins, outs, free) for fn, st, ins, outs, free in interp.plan]
        self.appended: dict[tuple, int] = {}       # shapes key -> positions a step adds (from its eager run)
        self.current: tuple[tuple, Captured] | None = None   # (shapes key, span) and its graph
        self.replays = self.captures = 0
        self._last: _Last | None = None   # the last replayed step, which the next one may continue

    def forget(self) -> None:
        """Drop the graph (an eager step may have moved the scratch buffers it uses)."""
        self.current = self._last = None

    def run(self, arrays: list, env: dict[str, int]) -> list | None:
        """The step's outputs from a graph, or None when it runs eagerly."""
        if self.blocker:
            return None
        kv = self.interp.kv
        bufs = {slot: kv.owner(arrays[slot]) for slot in self.site.pasts.values()}
        if not bufs or any(b is None for b in bufs.values()):
            return None
        key = (tuple(sorted((k, v) for k, v in env.items() if k != self.site.symbol)),
               tuple(b.data_ptr() for b in bufs.values()))
        return self._step(arrays, env, key, bufs)

    def run_again(self, inputs) -> list | None:
        """The step after a replayed one, when its pasts are the presents that step handed out (the same
        objects): only the other inputs (token ids) are bound and checked, the cache state is known."""
        last, specs = self._last, self.interp.program.inputs
        if last is None or self.blocker:
            return None
        if isinstance(inputs, Mapping):
            if len(inputs) != len(specs) or any(s["name"] not in inputs for s in specs):
                return None
            values = [inputs[s["name"]] for s in specs]
        else:
            values = list(inputs)
        if len(values) != len(specs) or any(values[i] is not t for i, t in last.presents.items()):
            return None
        others = [i for i in range(len(specs)) if i not in last.presents]
        bound, env_others = bind_inputs([specs[i] for i in others], [values[i] for i in others],
                                        self.interp.convert_input)
        symbol = self.site.symbol
        env = dict(last.env, **{symbol: last.env[symbol] + self.appended[last.key]})
        if any(env.get(k) != v for k, v in env_others.items()):
            return None
        for i, a in zip(others, bound):
            values[i] = a
        return self._step(values, env, last.key, last.bufs)

    def _step(self, arrays: list, env: dict[str, int], key: tuple, bufs: dict) -> list | None:
        kv = self.interp.kv
        self._last = None
        if key not in self.appended:   # the first step of these shapes over these caches runs eagerly
            self.appended = {k: s for k, s in self.appended.items() if k[1] == key[1]}   # older caches: done
            self.forget()
            outs = self.interp.execute(self.interp.plan, arrays, env)
            self.appended[key] = kv.appended
            return outs
        p, s = env[self.site.symbol], self.appended[key]
        capacity = min(b.shape[2] for b in bufs.values())
        if p + s > capacity:
            return None
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
        return self._replay(captured, arrays, env, key, p, s, bufs)

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

    def finish(self, outs: list, p: int, s: int, bufs: dict) -> list:
        """A traced or replayed step's outputs as an eager step returns them: presents as the filled views."""
        outs = list(outs)
        for j, slot in self.site.pasts.items():
            outs[j] = bufs[slot][:, :, :p + s]
            self.interp.kv.mark_filled(bufs[slot], p + s)
        self.interp.kv.appended = s
        return outs

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

    def _replay(self, c: Captured, arrays: list, env: dict, key: tuple, p: int, s: int, bufs: dict) -> list:
        pasts = set(self.site.pasts.values())
        for i, a in enumerate(arrays):
            if i not in pasts:
                c.static[i].copy_(a)
        self.interp.scalars.position.fill_(p)
        c.graph.replay()
        self.replays += 1
        outs = self.finish([o.clone() if j not in self.site.pasts else o for j, o in enumerate(c.outputs)], p, s, bufs)
        self._last = _Last({slot: outs[j] for j, slot in self.site.pasts.items()}, key, bufs, env)
        return outs

    def _ids_in_range(self, arrays: list) -> bool:
        """Token ids are checked before a replay (the graph's gather cannot raise)."""
        for slot, vocab in self.site.ids:
            ids = arrays[slot]
            if ids.numel():
                lo, hi = (int(v) for v in ids.aminmax())
                if lo < 0 or hi >= vocab:
                    return False   # the eager step raises the clear error
        return True
