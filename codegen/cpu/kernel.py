"""The CPU LUT matmul for one quantized weight: repack, build (or fetch from the cache) the library, wrap it."""
from __future__ import annotations

from ...passes.quantize.weight import QuantizedWeight
from ...runtime.lut import LutKernel, default_threads
from .build import build_library
from .isa import best_isa, supported
from .layout import TILE, CpuWeight, pack_cpu


def kernel_params(cw: CpuWeight, threads: int, isa: str, prologue: str = "none", eps: float = 0.0) -> dict:
    """What a library is built for (and the artifact records): shapes, bits, threads, ISA, prologue."""
    p = {"n": cw.n, "n_pad": cw.tiles * TILE, "k": cw.k, "k_pad": cw.k_pad, "runs": cw.w.shape[1],
         "groups": cw.scales.shape[1], "bits": cw.bits, "pairs": cw.w.shape[2], "threads": threads, "isa": isa,
         "layout": "x86-g4-n64-v1"}
    if prologue != "none":
        p.update(prologue=prologue, eps=float(eps))
    return p


def check_isa(isa: str | None) -> str:
    isa = isa or best_isa()
    if not supported(isa):
        raise RuntimeError(f"this CPU cannot run the {isa} kernels")
    return isa


def library_params(params: dict) -> dict:
    """The params the library depends on (N itself does not change the code: n_pad does)."""
    return {k: v for k, v in params.items() if k not in ("n", "layout")}


class LutMatmul(LutKernel):
    """``y = x @ W.T`` for a quantized ``W[N, K]``: x is float [..., K] (numpy or torch), y float32 [..., N]."""

    def __init__(self, qweight: QuantizedWeight, threads: int | None = None, isa: str | None = None):
        if not isinstance(qweight, QuantizedWeight):
            raise TypeError(f"build_lut_matmul takes a lutc.QuantizedWeight, got {type(qweight).__name__}")
        if qweight.config.table_dtype != "int8":
            raise NotImplementedError("the CPU kernels use int8 tables; float tables run on target='reference'")
        cw = pack_cpu(qweight)
        params = kernel_params(cw, threads or default_threads(), check_isa(isa))
        super().__init__(build_library(library_params(params)), params, cw.w, cw.scales, cw.zeros)
        self.isa, self.threads = params["isa"], params["threads"]
