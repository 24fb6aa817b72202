"""Per-step timings of a loaded model: where a prefill or a decode step spends its time.

While a :class:`Profile` is attached (``LoadedModel.profile()``), every call runs step by step and each step's
wall time is recorded under the call's phase ("prefill" for a call of several new tokens, "decode" for one, "call"
for a model without a sequence input) and a row key: the step's kernel, and for a LUT matmul its shape and width,
so equal matmuls of different layers add up in one row. With ``replayed=True`` decode steps replay as they do
unprofiled (runtime/replay.py) and the replay's bound calls are timed instead, as phase "decode (replayed)"; a
CUDA graph has no steps, so its calls count under "untimed steps". The table gives each row's share of its
phase, and for LUT matmuls the weight bytes read per second."""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Row:
    seconds: float = 0.0
    calls: int = 0
    weight_bytes: int = 0   # per call (LUT matmuls; 0 for the others)


@dataclass
class Phase:
    calls: int = 0          # model calls of this phase
    seconds: float = 0.0    # their wall time, interpreter included
    rows: dict[str, Row] = field(default_factory=lambda: defaultdict(Row))


class Profile:
    """Step timings over the model calls made while it is attached to an interpreter (``Interpreter.profile``)."""

    UNTIMED = "untimed steps"   # calls whose steps ran untimed: a replay's first (binding) step, a CUDA graph

    def __init__(self, sync: Callable[[], None] = lambda: None, replayed: bool = False):
        """``sync``: waits until the device has finished the queued work (a GPU runs kernels asynchronously).
        ``replayed``: decode steps still replay (runtime/replay.py) and their bound calls are timed, as phase
        "decode (replayed)"; otherwise every call runs step by step."""
        self.sync, self.replayed = sync, replayed
        self.phases: dict[str, Phase] = defaultdict(Phase)
        self._current: Phase | None = None
        self._wraps: dict[tuple, tuple] = {}   # (id(plan or bound calls), phase) -> (that list, its timed copy)

    def _timed(self, fn, phase: Phase, key: str, nbytes: int):
        row = phase.rows[key]
        row.weight_bytes = nbytes

        def run(*args):
            t0 = time.perf_counter()
            out = fn(*args)
            self.sync()
            row.seconds += time.perf_counter() - t0
            row.calls += 1
            return out
        return run

    def _wrapped(self, name: str, interp, entries: list) -> list:
        """``entries`` [(callable, step, ...)] with each callable timed into phase ``name``; wrapped once per list
        and phase, so only the first profiled call pays for building the wrappers."""
        phase = self._current = self.phases[name]
        hit = self._wraps.get((id(entries), name))
        if hit is None or hit[0] is not entries:
            timed = [(self._timed(fn, phase, self._key(interp, step), self._bytes(interp, step)), step, *rest)
                     for fn, step, *rest in entries]
            hit = self._wraps[(id(entries), name)] = (entries, timed)
        return hit[1]

    def plan(self, interp, env: dict[str, int]) -> list:
        """``interp``'s plan with each step timed into this call's phase."""
        return self._wrapped(phase_of(env), interp, interp.plan)

    def bound_calls(self, interp, bound) -> list:
        """A replay's bound calls [(call, step)] timed into phase "decode (replayed)"."""
        return self._wrapped("decode (replayed)", interp, bound.calls)

    def call(self, run: Callable[[], list]) -> list:
        """Run one model call (``run`` executes it through ``plan`` or ``bound_calls``) and add its wall time."""
        self.sync()
        self._current = None
        t0 = time.perf_counter()
        outs = run()
        self.sync()
        phase = self._current if self._current is not None else self.phases[self.UNTIMED]
        phase.seconds += time.perf_counter() - t0
        phase.calls += 1
        self._current = None
        return outs

    @staticmethod
    def _key(interp, step) -> str:
        if step.kernel != "lut":
            return step.kernel
        p = interp.program.luts[step.attrs["lut"]]["params"]
        prologue = p.get("prologue", "none")
        extra = "" if prologue == "none" else f" +{prologue}"
        bits = p.get("bits")
        return f"lut {p['n']}x{p['k']} " + (f"W{bits}" if bits else "") + extra

    @staticmethod
    def _bytes(interp, step) -> int:
        if step.kernel != "lut":
            return 0
        return int(getattr(interp.luts[step.attrs["lut"]], "weight_bytes", 0))

    def report(self) -> dict:
        """{phase: {"calls", "ms_per_call", "steps_ms_per_call", "rows": [{"step", "calls_per_call",
        "ms_per_call", "share", "gb_per_s"}]}}, rows by time, largest first."""
        out = {}
        for name, ph in self.phases.items():
            if not ph.calls:
                continue
            steps = sum(r.seconds for r in ph.rows.values())
            rows = []
            for key, r in sorted(ph.rows.items(), key=lambda kv: -kv[1].seconds):
                rows.append({"step": key, "calls_per_call": r.calls / ph.calls, "ms_per_call": 1e3 * r.seconds / ph.calls,
                             "share": r.seconds / ph.seconds if ph.seconds else float("nan"),
                             "gb_per_s": r.weight_bytes * r.calls / r.seconds / 1e9 if r.weight_bytes and r.seconds
                             else None})
            out[name] = {"calls": ph.calls, "ms_per_call": 1e3 * ph.seconds / ph.calls,
                         "steps_ms_per_call": 1e3 * steps / ph.calls, "rows": rows}
        return out

    def table(self) -> str:
        """The report as text, one table per phase."""
        lines = []
        for name, ph in self.report().items():
            if not ph["rows"]:
                lines.append(f"{name}: {ph['calls']} calls, {ph['ms_per_call']:.3f} ms per call (a replay binding "
                             "its plan, or a CUDA graph: no steps to time)")
                continue
            other = ph["ms_per_call"] - ph["steps_ms_per_call"]
            lines.append(f"{name}: {ph['calls']} calls, {ph['ms_per_call']:.3f} ms per call "
                         f"({other:.3f} ms of it between steps: inputs, buffers, the interpreter)")
            lines.append(f"  {'step (per call)':<34} {'count':>5} {'ms':>8} {'share':>7} {'weights GB/s':>13}")
            for r in ph["rows"]:
                gbs = f"{r['gb_per_s']:.1f}" if r["gb_per_s"] else ""
                lines.append(f"  {r['step']:<34} {r['calls_per_call']:>5.0f} {r['ms_per_call']:>8.3f} "
                             f"{100 * r['share']:>6.1f}% {gbs:>13}")
        return "\n".join(lines) if lines else "no calls were profiled"


def phase_of(env: dict[str, int]) -> str:
    """A call's phase from its symbol sizes: LLaMA-style graphs name the new tokens ``seq``."""
    if "seq" not in env:
        return "call"
    return "decode" if env["seq"] == 1 else "prefill"
