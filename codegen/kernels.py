"""``lutc.kernels``: the LUT kernels as plain callables, for benchmarks and for the whole-model path."""
from __future__ import annotations

from ..passes.quantize.weight import QuantizedWeight


def build_lut_matmul(qweight: QuantizedWeight, m: int | None = None, target: str = "cpu",
                     threads: int | None = None, isa: str | None = None, tune: bool = False,
                     progress: bool | None = None, kind: str | None = None, **cuda_options):
    """A callable ``y = x @ W.T`` for ``qweight`` (from ``lutc.quantize_weight``). ``m`` is the expected number
    of rows (a hint: every row count works); ``isa`` forces "avx512", "avx2", "neon" (aarch64) or "generic". The
    table mode is the weight's ``table_dtype`` ("int8": fast, ~1e-2 relative; "f32": the dequantized matmul to fp32 rounding).

    ``tune=True`` (cpu): time schedule candidates for ``m``'s row bucket (every bucket when ``m`` is None) once
    and cache the choice on disk (``$LUTC_CACHE``, default ~/.cache/lutc); ``progress`` shows a progress bar
    (default: when stderr is a terminal). Without tuning the schedule is the heuristic default: on CPUs with
    Intel AMX (Sapphire Rapids and later), 9 rows and more run the AMX kernel (weights unpacked to int8 tiles,
    activations int8 per row and K group: ~1e-2 relative like int8 tables, several times faster), fewer rows the
    table lookups; on other AVX-512 hosts the VNNI kernel and on AVX2 ones the madd kernel (vpmaddubsw) take the
    widths and row counts where they measured faster (codegen/cpu/schedule.py). ``kind`` forces one: "lut"
    (lookups for every row count) or "amx", "vnni", "madd" (9 rows and more; an error where the weight, the
    library's ISA or the host cannot take it).

    ``target="cuda"``: a ``CudaLutMatmul`` over torch CUDA tensors (``cuda_options``: ``out_dtype``
    "float32"/"float16", ``arch`` e.g. "sm_90a"/"sm_80"; ``kind`` "lut"/"mma"/"dq" forces a kernel: by default
    up to three activation rows run the dp4a GEMV (1-, 2-, 4-bit and ternary weights as codes, int8 tables) or
    the LUT kernel (3 bits, float tables, groups below 32), and more rows the tensor-core kernel); it builds
    without a GPU (``.build(m)``), and calling it without one raises ``NoGPUError``."""
    if target == "cuda":
        from .cuda.kernel import CudaLutMatmul

        return CudaLutMatmul(qweight, kind=kind, **cuda_options)
    if target != "cpu":
        raise NotImplementedError(f"LUT kernels for target {target!r} are not implemented yet; "
                                  "available: ['cpu', 'cuda']")
    if cuda_options:
        raise TypeError(f"unexpected options for target='cpu': {sorted(cuda_options)}")
    from .cpu.kernel import LutMatmul

    return LutMatmul(qweight, threads=threads, isa=isa, m=m, tune=tune, progress=progress, kind=kind)
