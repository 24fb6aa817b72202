"""The measured tuner of the CPU LUT matmul: schedule candidates come from rules (data: each returns the values
of one knob worth trying, or None when the knob does not apply), are timed once per (N, K, bits, group, row
bucket, ISA, threads, table mode) through the ``tune`` entry point of one library (the knobs are arguments
there, so one build serves every candidate), and the choice is cached on disk as JSON in ``$LUTC_CACHE/tune``
(default ~/.cache/lutc), keyed by a hash that includes the compilers and kernel sources.

Samples are single calls on cold weights (a read of twice the last-level cache before each), in interleaved
rounds, medians compared; the heuristic default stays unless a candidate is 5% faster. (Timing each candidate
in one block on hot weights, as the first version did, picked schedules up to 2x slower than the default on
this shared 2-core machine: bench/results/kernels_tuned_gemv_old_tuner.md.)"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Callable

import numpy as np

from ...runtime.isa import cpu_id, int8_kernels, last_level_cache_bytes
from ...runtime.lut import LutKernel
from .build import build_library, cache_dir, source_digest
from .kernel import int8_applies
from .layout import CpuWeight
from .schedule import (BUCKET_NAMES, BUCKETS, INT8_FIRST_BUCKET, INT8_KERNELS, KERNELS, KNOBS, MAX_ROWS, TILES,
                       bucket_of, capped, default_int8, default_knobs, max_tiles)

TIMING_ROWS = (1, 4, 16, 64)  # the row count each bucket is timed at
ROUNDS = 7                    # samples per candidate, taken in interleaved rounds (drift hits all alike)
MARGIN = 0.05                 # a candidate replaces the heuristic default only when this much faster
# read before each sample (twice the last-level cache, 64 MiB to 1 GiB): weights come from DRAM, as in a
# model's step (64 MiB stayed in this host's L3, 480 MiB reported)
FLUSH_MB = max(64, min(2 * last_level_cache_bytes() >> 20, 1024))
METHOD = "rounds-cold-llc-margin-v5"   # in the cache key: choices made by an older method are not reused


@dataclass(frozen=True)
class TuneKey:
    """What one tuning result is for (with the source digest, the cache key)."""
    n: int
    k: int
    bits: int
    group: int
    bucket: str
    isa: str
    threads: int
    table: str
    int8: str = ""  # the int8 kernels that are candidates, comma-separated (kernel.py int8_applies; this host's)
    cpu: str = ""   # runtime/isa.py cpu_id: the kind of core timed (another kind's choice is not reused)

    @property
    def rows(self) -> int:
        return TIMING_ROWS[BUCKET_NAMES.index(self.bucket)]

    @property
    def default(self) -> dict:
        """The heuristic's knobs for this bucket (schedule.py default_schedule, as kernel.py kernel_params caps
        them)."""
        knobs = default_knobs(self.isa, self.table, self.threads,
                              default_int8(self.int8_kernels, self.bits, BUCKET_NAMES.index(self.bucket)) or "lut")
        return capped(knobs, self.isa, self.table, self.bits)

    @property
    def int8_kernels(self) -> tuple[str, ...]:
        """The int8 kernels that are candidates in this bucket, best first."""
        if BUCKET_NAMES.index(self.bucket) < INT8_FIRST_BUCKET:
            return ()
        return tuple(k for k in self.int8.split(",") if k)


def _kernel(c: TuneKey):
    return ["lut", *c.int8_kernels] if c.int8_kernels else None


def _threads(c: TuneKey):
    return sorted({1, c.threads, *(t for t in (2, 4, 8, 16, 32) if t < c.threads)})


def _split(c: TuneKey):
    return None if c.rows == 1 or c.threads == 1 else ["n", "m"]


def _rows(c: TuneKey):
    return None if c.rows == 1 or c.isa != "avx512" else [r for r in (1, 2, MAX_ROWS) if r <= c.rows]


def _mblock(c: TuneKey):
    return None if c.rows < 16 else [0, 8, 16]


def _tiles(c: TuneKey):
    """Tiles per pass, for one row, where the library's kernel reads more than one."""
    top = max_tiles(c.isa, c.table, c.bits)
    return None if c.rows != 1 or top == 1 else [t for t in TILES if t <= top]


# knob -> rule; a rule returning None leaves the knob at its default
RULES: dict[str, Callable[[TuneKey], list | None]] = {"kernel": _kernel, "threads": _threads, "split": _split,
                                                       "rows": _rows, "mblock": _mblock, "tiles": _tiles}
assert tuple(RULES) == KNOBS


def candidates(c: TuneKey) -> list[dict]:
    """Every combination of the applicable rules' values, the default first, without duplicates (a split
    over one thread, a row block as large as the rows, row passes of the int8 kernels, which have none, or more
    tiles per pass than the kernel reads, are the same schedule)."""
    base = c.default
    values = [(knob, RULES[knob](c) or [base[knob]]) for knob in RULES]
    out = [base]
    for combo in product(*(v for _, v in values)):
        cand = dict(zip((k for k, _ in values), combo))
        if cand["threads"] == 1:
            cand["split"] = "n"
        if cand["mblock"] >= c.rows:
            cand["mblock"] = 0
        if cand["kernel"] in INT8_KERNELS:
            cand["rows"] = 1
        cand = capped(cand, c.isa, c.table, c.bits)
        if cand not in out:
            out.append(cand)
    return out


def knob_args(cand: dict) -> tuple[int, ...]:
    """A candidate as the tuning entry point's arguments (build.py: kernel, threads, split, rows, mblock, tiles)."""
    return (KERNELS.index(cand["kernel"]), cand["threads"], int(cand["split"] == "m"), cand["rows"], cand["mblock"],
            cand["tiles"])


def cache_path(key: TuneKey) -> Path:
    h = hashlib.sha256(json.dumps(asdict(key), sort_keys=True).encode())
    h.update(f"{source_digest()} {METHOD}".encode())
    return cache_dir("tune") / f"{h.hexdigest()[:24]}.json"


def _load(key: TuneKey) -> dict | None:
    """The cached choice, or None when there is none or the file is unreadable or not a tuning result."""
    try:
        data = json.loads(cache_path(key).read_text())
        knobs = data["knobs"]
        if data["key"] != asdict(key) or set(knobs) != set(RULES) or knobs["split"] not in ("n", "m") \
                or knobs["kernel"] not in KERNELS \
                or not all(isinstance(knobs[k], int) for k in ("threads", "rows", "mblock", "tiles")):
            return None
        return knobs
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(key: TuneKey, knobs: dict, timings: list) -> None:
    path = cache_path(key)
    part = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
    part.write_text(json.dumps({"key": asdict(key), "knobs": knobs, "timings_us": timings}, indent=1))
    os.replace(part, path)


def measure(kernel: LutKernel, x: np.ndarray, flush: np.ndarray | None = None) -> float:
    """Seconds of one call, after reading ``flush`` (evicting the weights from the caches)."""
    if flush is not None:
        flush.sum()
    t0 = time.perf_counter()
    kernel(x)
    return time.perf_counter() - t0


def choose(timings: list) -> dict:
    """The default (first) candidate unless another one's median is MARGIN faster: timing noise on a
    shared machine must not swap a schedule for a slower one. ``timings``: [candidate, median us]."""
    default, best = timings[0], min(timings, key=lambda ct: ct[1])
    return best[0] if best[1] < (1 - MARGIN) * default[1] else default[0]


def key_for(cw: CpuWeight, params: dict, bucket: int) -> TuneKey:
    """The tuning key of a library's row bucket (int8-kernel candidates where they apply and the host runs them)."""
    table = params.get("table", "int8")
    return TuneKey(params["n"], params["k"], params["bits"], params["k_pad"] // params["groups"], BUCKET_NAMES[bucket],
                   params["isa"], params["threads"], table,
                   ",".join(int8_kernels(params["isa"])) if int8_applies(cw, params["isa"], table) else "", cpu_id())


def tuned_schedule(cw: CpuWeight, params: dict, m: int | None = None, progress: bool | None = None) -> list[dict]:
    """``params["schedule"]`` with the buckets of ``m`` (every bucket when None) replaced by their measured
    best, from the disk cache when it has them."""
    sched = [dict(b) for b in params["schedule"]]
    keys = {b: key_for(cw, params, b) for b in (range(len(BUCKETS)) if m is None else [bucket_of(m)])}
    todo = []
    for b, key in keys.items():
        hit = _load(key)
        if hit is None:
            todo.append(b)
        else:
            sched[b] = hit
    if todo:
        for b, knobs in _time_buckets(cw, params, {b: keys[b] for b in todo}, progress).items():
            sched[b] = knobs
    return sched


def _time_buckets(cw: CpuWeight, params: dict, keys: dict[int, TuneKey], progress: bool | None) -> dict[int, dict]:
    tparams = {k: v for k, v in params.items() if k not in ("n", "layout", "prologue", "eps", "schedule")}
    lib = build_library(tparams, tune=True)
    kernel = LutKernel(lib, {**params, "prologue": "none"}, cw.w, cw.scales, cw.zeros, entry="tune")
    work = [(b, c) for b, key in keys.items() for c in candidates(key)]
    rng = np.random.default_rng(0)
    xs = {b: rng.standard_normal((key.rows, params["k"])).astype(np.float32) for b, key in keys.items()}
    flush = np.ones(FLUSH_MB << 18, np.float32)
    samples: list[list[float]] = [[] for _ in work]
    for b, cand in work:   # warm-up: first calls (thread pool start, page faults) are not samples
        kernel.knobs = knob_args(cand)
        kernel(xs[b])
    rounds = [(r, i) for r in range(ROUNDS) for i in range(len(work))]
    for r, i in _progress(rounds, f"tuning {params['n']}x{params['k']} W{params['bits']}",
                          sys.stderr.isatty() if progress is None else progress, [w for _, w in work]):
        b, cand = work[i]
        kernel.knobs = knob_args(cand)
        samples[i].append(measure(kernel, xs[b], flush))
    timings: dict[int, list] = {b: [] for b in keys}
    for (b, cand), ts in zip(work, samples):
        timings[b].append([cand, round(float(np.median(ts)) * 1e6, 2)])
    best = {}
    for b, key in keys.items():
        best[b] = choose(timings[b])
        _save(key, best[b], timings[b])
    return best


def _progress(items, label: str, enabled: bool, cands: list):
    if not enabled:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task(label, total=len(items))
        for r, i in items:
            bar.update(task, description=f"{label} round {r + 1}/{ROUNDS}: {cands[i]}")
            yield r, i
            bar.advance(task)
