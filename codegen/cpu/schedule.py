"""Schedules of the CPU LUT matmul: per row-count bucket, the knobs the TVM driver bakes into a library (which
micro-kernel runs, threads, how the work is split over them, rows per pass over a weight tile, rows per block).
The default is the heuristic; ``tune.py`` measures candidates."""
from __future__ import annotations

# Row-count buckets (first, last; None: no end). A library dispatches on the row count of each call.
BUCKETS = ((1, 1), (2, 8), (9, 32), (33, None))
BUCKET_NAMES = ("1", "2-8", "9-32", "33+")
MAX_ROWS = 4  # rows per pass the AVX-512 micro-kernels specialize (lut_kernels.c, lut_f32_kernels.c)
# "lut": table lookups (lut_kernels.c, lut_f32_kernels.c); "amx": weights unpacked to int8 and multiplied with int8
# activations on Intel AMX's tile unit (lut_amx_kernels.c), for buckets of 9 rows and more (its int8 activations,
# 16-row tiles, live in the tables buffer, which holds 4 bytes per row and K)
KERNELS = ("lut", "amx")
AMX_FIRST_BUCKET = 2
AMX_APPLIES = ("AVX-512 libraries with int8 tables, groups of a multiple of 16, and zero points with "
               "|2z + 1 - 2^b| + 2^b - 1 <= 127")  # kernel.py amx_applies
KNOBS = ("kernel", "threads", "split", "rows", "mblock")


def bucket_of(m: int) -> int:
    for i, (lo, hi) in enumerate(BUCKETS):
        if m >= lo and (hi is None or m <= hi):
            return i
    raise ValueError(f"row count must be positive, got {m}")


def default_knobs(isa: str, table: str, threads: int, kernel: str = "lut") -> dict:
    """Today's rules: every thread on N tiles, the widest row pass the micro-kernel has, rows not blocked."""
    rows = (4 if table == "int8" else 2) if isa == "avx512" and kernel == "lut" else 1
    return {"kernel": kernel, "threads": threads, "split": "n", "rows": rows, "mblock": 0}


def default_schedule(isa: str, table: str, threads: int, amx: bool = False) -> list[dict]:
    """``amx``: the AMX kernel may run (kernel.py decides: host, ISA, table mode, group size, zero points); it
    takes the buckets from 9 rows on, where it is several times faster than the lookups (bench/results)."""
    return [default_knobs(isa, table, threads, "amx" if amx and b >= AMX_FIRST_BUCKET else "lut")
            for b in range(len(BUCKETS))]


def check_schedule(schedule, max_threads: int, amx: bool = False) -> list[dict]:
    """A schedule as the driver needs it, or a ValueError saying what is wrong. A bucket without ``kernel`` (the
    schedules of older artifacts and tuning results) runs the lookups."""
    if not isinstance(schedule, (list, tuple)) or len(schedule) != len(BUCKETS):
        raise ValueError(f"a schedule is one knob dict per row bucket {BUCKET_NAMES}, got {schedule!r}")
    out = []
    for i, b in enumerate(schedule):
        b = {"kernel": "lut", **b} if isinstance(b, dict) else b
        if not isinstance(b, dict) or set(b) != set(KNOBS):
            raise ValueError(f"schedule knobs are {', '.join(KNOBS)}; got {b!r}")
        if b["kernel"] not in KERNELS or not 1 <= b["threads"] <= max_threads or b["split"] not in ("n", "m") \
                or not 1 <= b["rows"] <= MAX_ROWS or b["mblock"] < 0:
            raise ValueError(f"bad schedule knobs {b} (kernel {'|'.join(KERNELS)}, threads 1..{max_threads}, "
                             f"split n|m, rows 1..{MAX_ROWS}, mblock >= 0)")
        if b["kernel"] == "amx" and (not amx or i < AMX_FIRST_BUCKET):
            raise ValueError(f"bucket {BUCKET_NAMES[i]}: the amx kernel runs " +
                             ("buckets of 9 rows and more" if amx else "only " + AMX_APPLIES))
        out.append({k: b[k] for k in KNOBS})
    return out
