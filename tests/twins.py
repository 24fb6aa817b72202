"""numpy twins of kernels whose numerics differ from the reference target's (shared by several test files)."""
import numpy as np


def amx_reference(q, x):
    """The AMX kernel's numerics in numpy: activations int8 per row and K group (a = max|x| / 127 in float32,
    rounded to nearest even, as lut_amx_kernels.c does), weights 2 (q - z) in int8 with the scale s/2 in f16,
    exact integer dot products per group, rescaled and summed in float64."""
    x = x.reshape(-1, q.k).astype(np.float32)
    gs, groups = q.group_size, q.k_pad // q.group_size
    xp = np.zeros((x.shape[0], q.k_pad), np.float32)
    xp[:, :q.k] = x
    xg = xp.reshape(-1, groups, gs)
    a = np.abs(xg).max(-1) / np.float32(127)
    a = np.where(a > 0, a, np.float32(1)).astype(np.float32)
    xq = np.clip(np.round(xg * (np.float32(1) / a)[..., None]), -128, 127).astype(np.float64)
    w8 = (2 * q.codes.astype(np.float64) - 2 * np.repeat(q.zero_points().astype(np.float64), gs, 1)[:, :q.k_pad])
    w8 = w8.reshape(q.n, groups, gs)
    dots = np.einsum("mgk,ngk->mng", xq, w8)                       # exact: integers below 2^53
    s = q.scales.astype(np.float16).astype(np.float64) / 2          # [n, groups]
    return np.einsum("mng,mg,ng->mn", dots, a.astype(np.float64), s)


def lut_reference(q, x):
    """The literal int8-table LUT matmul of the reference target, and the exact dequantized matmul."""
    from lutc.codegen.reference.lut import lut_matmul, precompute

    t = precompute(x.reshape(-1, q.k), q.k_pad, q.group_size, "int8")
    lut = lut_matmul(*t, q.packed(), q.scales, q.zeros, None, bits=q.bits, group_size=q.group_size)
    return lut.reshape(x.shape[:-1] + (q.n,)), x.astype(np.float64) @ q.dequantize().astype(np.float64).T


def rel(a, b):
    """max-abs error over max-abs reference"""
    return float(np.abs(a - b).max() / np.abs(b).max())


def cpu_weight(q):
    """The weights the CPU kernels compute with, as a QuantizedWeight: f16 scales, and for real-valued zero points
    the grid point z_i plus the f16 offset (codegen/cpu/layout.py) folded back into a float64 zero point."""
    from dataclasses import replace

    from lutc.codegen.cpu.layout import kernel_zero_points

    s16 = q.scales.astype(np.float16).astype(np.float64)
    zi, offsets = kernel_zero_points(q)
    z = zi if offsets is None else zi - 2 * np.divide(offsets.astype(np.float16).astype(np.float64), s16,
                                                       out=np.zeros_like(s16), where=s16 != 0)
    return replace(q, scales=s16, zeros=(z + (1 << q.bits) - 1) / 2)
