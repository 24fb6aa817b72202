"""The CPU LUT matmul for one quantized weight: repack, build (or fetch from the cache) the library, wrap it."""
from __future__ import annotations

import numpy as np

from ...passes.quantize.weight import QuantizedWeight
from ...runtime.isa import INT8_KERNEL_ISA, int8_kernels
from ...runtime.lut import LutKernel, default_threads
from .build import build_library
from .isa import best_isa, host_arch, native, supported
from .layout import LAYOUT, TILE, CpuWeight, pack_cpu
from .schedule import (INT8_APPLIES, INT8_KERNELS, KERNELS, check_schedule, default_int8_buckets,
                       capped, default_schedule)

TABLES = ("int8", "f32")
PROLOGUES = ("none", "rms_norm", "swiglu")  # what the call computes from its input before building tables


def int8_applies(cw: CpuWeight, isa: str, table: str) -> bool:
    """Whether the int8 kernels of an ``isa`` library compute this weight's matmul: int8 tables and K groups of a
    multiple of 16 (the AMX tiles' K step; the activations' layout); in AVX-512 libraries (lut_amx_kernels.c,
    lut_vnni_kernels.c) zero points for which the unpacked weights q' - z' (q' odd in [1 - 2^b, 2^b - 1]) fit int8;
    in AVX2 ones (lut_madd_kernels.c, the codes q unpacked, z through the activations' sums) any."""
    if isa not in INT8_KERNEL_ISA.values() or table != "int8" or (cw.k_pad // cw.scales.shape[1]) % 16:
        return False
    top = (1 << cw.bits) - 1
    if cw.bits > SIMD_INT8_BITS:   # (codes past int8's range; madd refuses them)
        return False
    return isa == "avx2" or int(np.abs(cw.zeros.astype(np.int16)).max(initial=0)) + top <= 127


SIMD_INT8_BITS = 4   # bit planes the SIMD int8-table kernels take: two pairs per run (lut_kernels.c tile_rows)


def library_table(table: str, bits: int, isa: str) -> str:
    """The table mode of one LUT library: ``table``, except that wider weights (8-bit: GGUF Q8_0) take float tables
    in SIMD libraries. Their int8-table GEMV reads at most two pairs of planes per run (an 8-bit weight's four would
    need twice its accumulators; it used to read an 8-bit tile as a 1-bit one: wrong sums, reads past the tile); the
    float-table kernels take any width, more exactly, and at 8 bits ran 22x faster than the portable int8-table
    kernel (4096 x 4096, one row, 2 threads, warm: 0.55 vs 12.3 ms; W4 with int8 tables 0.40)."""
    return "f32" if table == "int8" and bits > SIMD_INT8_BITS and isa != "generic" else table


def kernel_params(cw: CpuWeight, threads: int, isa: str, prologue: str = "none", eps: float = 0.0,
                  table: str = "int8", schedule: list[dict] | None = None) -> dict:
    """What a library is built for (and the artifact records): shapes, bits, threads, ISA, table mode ("int8"
    or "f32"), the schedule per row bucket (schedule.py; default: the heuristic, with the best int8 kernel this
    CPU runs (AMX; else VNNI, at W3/W4 from 9 rows, W2 from 33) where it applies), prologue, and ``offsets``
    when the weight has real-valued zero points."""
    if table not in TABLES:
        raise ValueError(f"table must be one of {TABLES}, got {table!r}")
    table = library_table(table, cw.bits, isa)
    int8 = int8_applies(cw, isa, table)
    p = {"n": cw.n, "n_pad": cw.tiles * TILE, "k": cw.k, "k_pad": cw.k_pad, "runs": cw.runs,
         "groups": cw.scales.shape[1], "bits": cw.bits, "tile_bytes": cw.w.shape[1], "threads": threads, "isa": isa,
         "layout": LAYOUT, "table": table,
         "schedule": check_schedule(schedule, threads, int8) if schedule else
         default_schedule(isa, table, threads, default_int8_buckets(int8_kernels(isa), cw.bits) if int8 else None)}
    p["schedule"] = [capped(b, isa, table, cw.bits) for b in p["schedule"]]
    for b in p["schedule"]:
        if b["kernel"] in INT8_KERNELS and INT8_KERNEL_ISA[b["kernel"]] != isa:
            raise ValueError(f"the {b['kernel']} kernel is in {INT8_KERNEL_ISA[b['kernel']]} libraries, not in {isa} ones")
    if cw.offsets:   # real-valued zero points: the scales array holds their offsets too (layout.py)
        p["offsets"] = True
    if prologue not in PROLOGUES:
        raise ValueError(f"prologue must be one of {PROLOGUES}, got {prologue!r}")
    if prologue == "rms_norm":
        p.update(prologue=prologue, eps=float(eps))
    elif prologue == "swiglu":
        p.update(prologue=prologue)
    return p


def check_isa(isa: str | None) -> str:
    isa = isa or best_isa()
    if not supported(isa):
        cross = "" if native(isa) else (" (another machine's: its libraries cross-compile, codegen/cpu/build.py; whole "
                                        "models compile on the machine that runs them)")
        raise RuntimeError(f"this CPU ({host_arch()}) cannot run the {isa} kernels{cross}")
    return isa


def library_params(params: dict) -> dict:
    """The params the library depends on (N itself does not change the code: n_pad does)."""
    return {k: v for k, v in params.items() if k not in ("n", "layout")}


class LutMatmul(LutKernel):
    """``y = x @ W.T`` for a quantized ``W[N, K]``: x is float [..., K] (numpy or torch), y float32 [..., N].
    The table mode follows the weight's ``table_dtype``; ``tune`` times schedule candidates once (tune.py) for
    the row bucket of ``m`` (every bucket when ``m`` is None), later calls read the choice from the disk cache;
    ``kind`` ("lut", "amx", "vnni", "madd") forces the micro-kernel of the buckets from 9 rows (schedule.py)."""

    def __init__(self, qweight: QuantizedWeight, threads: int | None = None, isa: str | None = None,
                 m: int | None = None, tune: bool = False, progress: bool | None = None, kind: str | None = None):
        if not isinstance(qweight, QuantizedWeight):
            raise TypeError(f"build_lut_matmul takes a lutc.QuantizedWeight, got {type(qweight).__name__}")
        table = qweight.config.table_dtype
        if table not in TABLES:
            raise NotImplementedError(f"the CPU kernels have {TABLES} tables, not {table!r}")
        if kind not in (None, *KERNELS):
            raise ValueError(f"kind must be one of {KERNELS} (or None: the heuristic), got {kind!r}")
        if kind and tune:
            raise ValueError("kind forces a kernel and tune measures which one to take: pass one of them")
        cw = pack_cpu(qweight)
        threads, isa = threads or default_threads(), check_isa(isa)
        if kind in INT8_KERNELS and not int8_applies(cw, isa, table):
            raise ValueError(f"the {kind} kernel takes {INT8_APPLIES}")
        schedule = default_schedule(isa, table, threads, kind if kind in INT8_KERNELS else None) if kind else None
        params = kernel_params(cw, threads, isa, table=table, schedule=schedule)
        if tune:
            from .tune import tuned_schedule

            params["schedule"] = tuned_schedule(cw, params, m=m, progress=progress)
        super().__init__(build_library(library_params(params)), params, cw.w, cw.scales, cw.zeros)
        self.isa, self.threads = params["isa"], params["threads"]
