"""``lutc.kernels``: the LUT kernels as plain callables, for benchmarks and for the whole-model path."""
from __future__ import annotations

from ..passes.quantize.weight import QuantizedWeight


def build_lut_matmul(qweight: QuantizedWeight, m: int | None = None, target: str = "cpu",
                     threads: int | None = None, isa: str | None = None):
    """A callable ``y = x @ W.T`` for ``qweight`` (from ``lutc.quantize_weight``). ``m`` is the expected number
    of rows (a hint: every row count works); ``isa`` forces "avx512", "avx2" or "generic"."""
    if target != "cpu":
        raise NotImplementedError(f"LUT kernels for target {target!r} are not implemented yet; available: ['cpu']")
    from .cpu.kernel import LutMatmul

    return LutMatmul(qweight, threads=threads, isa=isa)
