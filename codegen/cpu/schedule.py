"""Schedules of the CPU LUT matmul: per row-count bucket, the knobs the TVM driver bakes into a library (threads,
how the work is split over them, rows per pass over a weight tile, rows per block). The default is the
heuristic; ``tune.py`` measures candidates."""
from __future__ import annotations

# Row-count buckets (first, last; None: no end). A library dispatches on the row count of each call.
BUCKETS = ((1, 1), (2, 8), (9, 32), (33, None))
BUCKET_NAMES = ("1", "2-8", "9-32", "33+")
MAX_ROWS = 4  # rows per pass the AVX-512 micro-kernels specialize (lut_kernels.c, lut_f32_kernels.c)


def bucket_of(m: int) -> int:
    for i, (lo, hi) in enumerate(BUCKETS):
        if m >= lo and (hi is None or m <= hi):
            return i
    raise ValueError(f"row count must be positive, got {m}")


def default_knobs(isa: str, table: str, threads: int) -> dict:
    """Today's rules: every thread on N tiles, the widest row pass the micro-kernel has, rows not blocked."""
    rows = (4 if table == "int8" else 2) if isa == "avx512" else 1
    return {"threads": threads, "split": "n", "rows": rows, "mblock": 0}


def default_schedule(isa: str, table: str, threads: int) -> list[dict]:
    return [default_knobs(isa, table, threads) for _ in BUCKETS]


def check_schedule(schedule, max_threads: int) -> list[dict]:
    """A schedule as the driver needs it, or a ValueError saying what is wrong."""
    if not isinstance(schedule, (list, tuple)) or len(schedule) != len(BUCKETS):
        raise ValueError(f"a schedule is one knob dict per row bucket {BUCKET_NAMES}, got {schedule!r}")
    out = []
    for b in schedule:
        if set(b) != {"threads", "split", "rows", "mblock"}:
            raise ValueError(f"schedule knobs are threads, split, rows, mblock; got {sorted(b)}")
        if not 1 <= b["threads"] <= max_threads or b["split"] not in ("n", "m") or not 1 <= b["rows"] <= MAX_ROWS \
                or b["mblock"] < 0:
            raise ValueError(f"bad schedule knobs {b} (threads 1..{max_threads}, split n|m, rows 1..{MAX_ROWS}, "
                             "mblock >= 0)")
        out.append({k: b[k] for k in ("threads", "split", "rows", "mblock")})
    return out
