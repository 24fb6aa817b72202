"""The reference kernels by op kind: the numpy kernels of ``lutc.runtime.kernels`` (shared with the thin
runtime) plus the literal LUT kernels of ``lut.py``."""
from __future__ import annotations

from ...ir.ops import Op
from ...runtime.kernels import KERNELS as _BY_NAME, Kernel, gelu, sdpa, softmax  # noqa: F401 (re-exported)


def _lut_precompute(attrs, ins, dim):
    from .lut import precompute

    return list(precompute(ins[0], attrs["k_pad"], attrs["group_size"], attrs["table_dtype"],
                           attrs.get("symmetric_table", True)))


def _lut_matmul(attrs, ins, dim):
    from .lut import lut_matmul

    tables, tscale, xsum, packed, scales = ins[:5]
    rest = list(ins[5:])
    zeros = rest.pop(0) if attrs.get("zero_point") else None
    bias = rest.pop(0) if attrs.get("has_bias") else None
    return lut_matmul(tables, tscale, xsum, packed, scales, zeros, bias, bits=attrs["bits"],
                      group_size=attrs["group_size"], symmetric=attrs.get("symmetric_table", True))


KERNELS: dict[Op, Kernel] = {op: _BY_NAME[op.value] for op in Op if op.value in _BY_NAME}
KERNELS.update({Op.LUT_PRECOMPUTE: _lut_precompute, Op.LUT_MATMUL: _lut_matmul})

assert set(KERNELS) >= set(Op) - {Op.INPUT, Op.CONST}, set(Op) - set(KERNELS)
