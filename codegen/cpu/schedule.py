"""Schedules of the CPU LUT matmul: per row-count bucket, the knobs the TVM driver bakes into a library (which
micro-kernel runs, threads, how the work is split over them, rows per pass over a weight tile, rows per block,
weight tiles one row's pass reads).
The default is the heuristic; ``tune.py`` measures candidates."""
from __future__ import annotations

# Row-count buckets (first, last; None: no end). A library dispatches on the row count of each call.
BUCKETS = ((1, 1), (2, 8), (9, 32), (33, None))
BUCKET_NAMES = ("1", "2-8", "9-32", "33+")
MAX_ROWS = 4  # rows per pass the AVX-512 micro-kernels specialize (lut_kernels.c, lut_f32_kernels.c)
# "lut": table lookups (lut_kernels.c, lut_f32_kernels.c); the int8 kernels unpack the weights to int8 and multiply
# them with int8 activations, for buckets of 9 rows and more (the activations live in the tables buffer, which holds
# 4 bytes per row and K): "amx" on Intel AMX's tile unit (lut_amx_kernels.c), "vnni" with AVX-512 VNNI's vpdpbusd
# (lut_vnni_kernels.c), for AVX-512 hosts without AMX, and "madd" with AVX2's vpmaddubsw (lut_madd_kernels.c), in
# AVX2 libraries
KERNELS = ("lut", "amx", "vnni", "madd")
INT8_KERNELS = ("amx", "vnni", "madd")  # best first: the default takes the first one the library holds and the host runs
INT8_FIRST_BUCKET = 2
# the widths from which the heuristic takes each int8 kernel, per int8 bucket (9-32, 33+): AMX beats the lookups at
# every width; VNNI (AMD Zen 5, warm weights) does at W3 and W4 from 9 rows, at W2 and ternary (two planes) from
# about 40-64 rows (W2 at 128 rows: 1.05-1.34x the lookups; at 16 rows 0.7-0.9x), never at W1 (one plane); madd (AMD
# Zen 3, 4096x4096, 1 and 2 threads) at W3 and W4 from 33 rows (128 rows: 1.7-1.9x the lookups; 16 rows 0.9-1.1x),
# never at W1/W2/ternary (128 rows: 1.04-1.05x; 16 rows 0.8-0.9x)
INT8_MIN_BITS = {"amx": (1, 1), "vnni": (3, 2), "madd": (5, 3)}
INT8_APPLIES = ("AVX-512 and AVX2 libraries with int8 tables and groups of a multiple of 16 (AVX-512: zero points "
                "with |2z + 1 - 2^b| + 2^b - 1 <= 127)")  # kernel.py int8_applies
KNOBS = ("kernel", "threads", "split", "rows", "mblock", "tiles")
# weight tiles one row's pass reads at once (the lookups, int8 tables; the C kernels cap it at what they have:
# AVX-512 4, AVX2 2 for one pair of planes, else 1). Default: the most. Measured with bench/cpu_proto/gemv_streams.c
# at W2-W4, 4096x4096 and 11008x4096, 1 and 2 threads: on Sapphire Rapids 4 ran 7-10% faster than 2; on AMD Zen 4
# 4 ran up to 10% faster than 2 and 1.3x than 1 once the weights were prefetched into L2 (into L1, 4 had run
# 1.3-1.5x slower than 2 there). The tuner measures all three.
TILES = (1, 2, 4)
# what a bucket of an older artifact or tuning result left out: it ran the lookups, with the most tiles per pass
OLDER_DEFAULTS = {"kernel": "lut", "tiles": TILES[-1]}


def bucket_of(m: int) -> int:
    for i, (lo, hi) in enumerate(BUCKETS):
        if m >= lo and (hi is None or m <= hi):
            return i
    raise ValueError(f"row count must be positive, got {m}")


def max_tiles(isa: str, table: str, bits: int) -> int:
    """The most tiles one row's pass reads in that library (the C kernels cap the knob there: LUTC_GEMV's
    MAX_TILES)."""
    if table != "int8":
        return 1
    return 4 if isa == "avx512" else 2 if isa == "avx2" and bits <= 2 else 1


def capped(knobs: dict, isa: str, table: str, bits: int) -> dict:
    """``knobs`` with the tiles per pass the library's kernel actually reads (what a schedule records)."""
    return dict(knobs, tiles=min(knobs["tiles"], max_tiles(isa, table, bits)))


def default_knobs(isa: str, table: str, threads: int, kernel: str = "lut") -> dict:
    """Today's rules: every thread on N tiles, the widest row pass the micro-kernel has, rows not blocked, the
    most tiles per pass."""
    rows = (4 if table == "int8" else 2) if isa == "avx512" and kernel == "lut" else 1
    return {"kernel": kernel, "threads": threads, "split": "n", "rows": rows, "mblock": 0,
            "tiles": TILES[-1]}


def default_int8(kernels, bits: int, bucket: int = len(BUCKETS) - 1) -> str | None:
    """The int8 kernel the heuristic takes in row bucket ``bucket`` for a weight of ``bits`` among ``kernels`` (the
    host's, best first), or None (the lookups)."""
    if bucket < INT8_FIRST_BUCKET:
        return None
    return next((k for k in kernels if bits >= INT8_MIN_BITS[k][bucket - INT8_FIRST_BUCKET]), None)


def default_int8_buckets(kernels, bits: int) -> list[str | None]:
    """``default_int8`` for every row bucket (what ``default_schedule`` takes)."""
    return [default_int8(kernels, bits, b) for b in range(len(BUCKETS))]


def default_schedule(isa: str, table: str, threads: int, int8=None) -> list[dict]:
    """``int8``: the int8 kernel that may run from 9 rows on (kernel.py decides: host, ISA, table mode, group size,
    zero points), one per bucket (a list: ``default_int8`` of each), or None: the lookups everywhere."""
    per_bucket = int8 if isinstance(int8, (list, tuple)) else [int8] * len(BUCKETS)
    return [default_knobs(isa, table, threads, per_bucket[b] if per_bucket[b] and b >= INT8_FIRST_BUCKET else "lut")
            for b in range(len(BUCKETS))]


def check_schedule(schedule, max_threads: int, int8: bool = False) -> list[dict]:
    """A schedule as the driver needs it, or a ValueError saying what is wrong. A bucket without ``kernel`` or
    ``tiles`` (the schedules of older artifacts and tuning results) runs the lookups, with the most tiles per pass
    (what those libraries did)."""
    if not isinstance(schedule, (list, tuple)) or len(schedule) != len(BUCKETS):
        raise ValueError(f"a schedule is one knob dict per row bucket {BUCKET_NAMES}, got {schedule!r}")
    out = []
    for i, b in enumerate(schedule):
        b = {**OLDER_DEFAULTS, **b} if isinstance(b, dict) else b
        if not isinstance(b, dict) or set(b) != set(KNOBS):
            raise ValueError(f"schedule knobs are {', '.join(KNOBS)}; got {b!r}")
        if b["kernel"] not in KERNELS or not 1 <= b["threads"] <= max_threads or b["split"] not in ("n", "m") \
                or not 1 <= b["rows"] <= MAX_ROWS or b["mblock"] < 0 or b["tiles"] not in TILES:
            raise ValueError(f"bad schedule knobs {b} (kernel {'|'.join(KERNELS)}, threads 1..{max_threads}, "
                             f"split n|m, rows 1..{MAX_ROWS}, mblock >= 0, tiles {'|'.join(map(str, TILES))})")
        if b["kernel"] in INT8_KERNELS and (not int8 or i < INT8_FIRST_BUCKET):
            raise ValueError(f"bucket {BUCKET_NAMES[i]}: the {b['kernel']} kernel runs " +
                             ("buckets of 9 rows and more" if int8 else "only " + INT8_APPLIES))
        out.append({k: b[k] for k in KNOBS})
    return out
