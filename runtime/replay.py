"""Decode steps replayed on the CPU from a bound plan: what the CUDA graphs do for the GPU (runtime/decode.py
says when a step is replayed), done with Python calls over fixed buffers.

An eager step pays, at every kernel call, for what does not change from token to token: DLPack handles of its
arguments, the copy of its input into an aligned buffer, the copy of its result out, the cache buffers looked
up, the interpreter's bookkeeping. On SmolLM2-135M that was 42% of a decode step (11 us per LUT call of a few
us of kernel). A bound plan does it once: every value of the step gets a buffer of its own, every kernel call
becomes a call without arguments over them (``LutKernel.bind``, ``CompiledOps.bind_rope_kv_attention``; any
other step recomputes its numpy kernel into its buffer, or, when it only views its inputs, costs nothing), and
a replay copies the token ids in, makes the calls and copies the outputs out. The cache position is the one
thing the calls read per step (``Cursor.p``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import dims
from .decode import DecodeReplay, kv_pairs, mentions
from .lut import aligned_empty

# rows (batch x new positions) up to which a step is replayed: a bound plan keeps every value of the step in a
# buffer of its own (SmolLM2: ~0.8 MB per row), and past a few rows the kernels outweigh the Python
MAX_ROWS = 8


class Unbindable(Exception):
    """A step that has no bound form (the program's decode steps run eagerly)."""


class Mismatch(Exception):
    """A bound step's result no longer has the shape of its buffer (the replay is dropped)."""


def unbound(program, kinds) -> str | None:
    """Why the steps that extend the KV caches cannot be bound with binders for ``kinds``, or None."""
    missing = [s for s in program.steps if kv_pairs(s) and s.kernel not in kinds]
    return f"{missing[0].kernel} {missing[0].name} has no bound form" if missing else None


class Cursor:
    """What bound calls read when they run: the cache position and the symbol sizes of the step."""

    def __init__(self):
        self.p, self.env = 0, {}

    def dim(self, d) -> int:
        return dims.evaluate(d, self.env) if isinstance(d, str) else int(d)


@dataclass
class Bound:
    key: tuple
    calls: list[tuple[Callable[[], None], object]]   # (call, its step), in program order
    inputs: list[tuple[int, np.ndarray]]             # (input slot, the buffer it is copied into)
    outputs: list                                    # the program's outputs: buffers (presents: cache buffers)


class CpuReplay(DecodeReplay):
    """The bound decode plan of a CPU interpreter. ``binders``: step kind -> ``bind(attrs, ins, kv, cursor) ->
    (call, outputs)`` for kernels other than the LUT matmuls (``CompiledOps.binders``)."""

    def __init__(self, interp, binders: dict[str, Callable] | None = None):
        super().__init__(interp)
        self.binders = {"lut": self._bind_lut, **(binders or {})}
        self.cursor = Cursor()
        self.bound: Bound | None = None
        self.builds = 0
        self._symbols = frozenset([self.site.symbol])
        self.blocker = self.blocker or unbound(interp.program, self.binders)

    def replayed(self, arrays: list, env: dict, key: tuple, p: int, s: int, bufs: dict) -> list | None:
        if s * next(iter(bufs.values())).shape[0] > MAX_ROWS:
            return None
        self.cursor.p, self.cursor.env = p, env
        try:
            if self.bound is None or self.bound.key != key:
                self.bound = None
                self.bound = self._build(arrays, env, key)
                self.builds += 1
            else:
                self._run(self.bound, arrays)
        except (Unbindable, Mismatch) as e:
            self.bound, self.blocker = None, str(e)
            return None
        pasts = self.site.pasts
        outs = [o if j in pasts else np.array(o) for j, o in enumerate(self.bound.outputs)]
        return self.finish(outs, p, s, bufs, key)

    def _run(self, b: Bound, arrays: list) -> None:
        for slot, buf in b.inputs:
            np.copyto(buf, arrays[slot], casting="no")
        prof = self.interp.profile
        calls = b.calls if prof is None else prof.bound_calls(self.interp, b)
        i = 0
        try:
            for i, (call, _) in enumerate(calls):
                call()
        except (ValueError, TypeError, IndexError) as e:
            step = calls[i][1]
            raise type(e)(f"{step.kernel} {step.name}: {e}") from e

    def _build(self, arrays: list, env: dict, key: tuple) -> Bound:
        """Bind every step to buffers of its own, running each once (this step's outputs come out of it)."""
        it, pasts = self.interp, set(self.site.pasts.values())
        regs = list(it.init)
        inputs = []
        for i, a in enumerate(arrays):
            if i not in pasts:
                a = _fixed_copy(a)
                inputs.append((i, a))
            regs[i] = a
        for i, c in it.symbolic:
            if mentions(c.reshape(-1).tolist(), self._symbols):
                raise Unbindable(f"a shape constant {c.tolist()} depends on the cache length")
            regs[i] = np.asarray([self.cursor.dim(x) for x in c.reshape(-1).tolist()], np.int64).reshape(c.shape)
        calls = []
        for fn, step, ins, outs, _ in it.plan:
            vals = [regs[j] for j in ins]
            bind = self.binders.get(step.kernel)
            try:
                call, res = bind(step.attrs, vals, it.kv, self.cursor) if bind else self._bind_numpy(fn, step, vals)
                if call is not None:
                    call()
                    calls.append((call, step))
            except (ValueError, TypeError, IndexError) as e:
                raise type(e)(f"{step.kernel} {step.name}: {e}") from e
            for j, o in zip(outs, res):
                regs[j] = o
        return Bound(key, calls, inputs, [regs[j] for j in it.outputs])

    def _bind_lut(self, attrs, ins, kv, cursor):
        call, out = self.interp.luts[attrs["lut"]].bind(ins[0], ins[1] if len(ins) == 2 else None)
        return call, [out]

    def _bind_numpy(self, fn, step, vals):
        """A step without a bound form: its kernel recomputed into buffers of its own at every call, or nothing at
        all when its results only view its inputs (reshapes, splits) and the cache position does not enter."""
        attrs, dim = step.attrs, self.cursor.dim
        many = len(step.outputs) > 1

        def results():   # as Interpreter.execute takes them
            out = fn(attrs, vals, dim)
            return list(out) if many else [out[0] if isinstance(out, list) else out]
        firsts = results()
        moving = mentions(attrs, self._symbols)
        views = [not moving and _views_into(o, vals) for o in firsts]
        if all(views):
            return None, firsts
        dests = [o if view else _fixed_copy(o) for o, view in zip(firsts, views)]
        copies = [(j, d) for j, (d, view) in enumerate(zip(dests, views)) if not view]

        def call():
            outs = results()
            for j, d in copies:
                o = outs[j]
                if np.shape(o) != d.shape:
                    raise Mismatch(f"{step.kernel} {step.name}: its result is {list(np.shape(o))} where the "
                                   f"bound step had {list(d.shape)}")
                np.copyto(d, o)
        return call, dests


def _views_into(o, vals) -> bool:
    return isinstance(o, np.ndarray) and any(isinstance(v, np.ndarray) and np.may_share_memory(o, v) for v in vals)


def _fixed_copy(a) -> np.ndarray:
    """An aligned buffer holding ``a`` (the LUT kernels read aligned activations in place)."""
    a = np.asarray(a)
    buf = aligned_empty(a.shape, a.dtype)
    buf[...] = a
    return buf
