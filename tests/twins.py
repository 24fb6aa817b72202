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


def real_zero_weight(bits, n, k, group, table="int8", seed=0):
    """Codes with f16 scales and real-valued zero points, as GGUF Q4_1 and the K-quants' mins make them
    (z = -m / s): inside the grid (SmolLM2's Q4_1 file has all of its 3.3M there), and 5% of the groups off it
    (all-positive or all-negative weights: the offsets exceed s/2)."""
    from lutc.passes.quantize import LayerQuant
    from lutc.passes.quantize.weight import QuantizedWeight

    rng = np.random.default_rng(seed)
    kp = -(-k // (group or 8)) * (group or 8)
    groups = kp // group if group else 1
    top = (1 << bits) - 1
    z = rng.uniform(0, top, (n, groups))
    far = rng.random((n, groups)) < 0.05
    # up to half the grid beyond its ends: the int8 tables' error of the zero-point term grows with |z|
    z[far] = np.where(rng.random(far.sum()) < 0.5, -rng.uniform(0, top / 2, far.sum()),
                      rng.uniform(top, 1.5 * top, far.sum()))
    cfg = LayerQuant(bits=bits, group_size=group, scale_dtype="f16", table_dtype=table)
    return QuantizedWeight(rng.integers(0, top + 1, (n, kp)).astype(np.uint8),
                           (rng.uniform(0.5, 2, (n, groups)) / top).astype(np.float16), z.astype(np.float32), cfg, k)


def cuda_zero_points(cw):
    """z' [G, N_pad] as the CUDA kernels use them: the int8 z_i' plus the float16 fraction of real-valued ones
    (codegen/cuda/layout.py); zeros for symmetric weights."""
    z = np.zeros((cw.groups, cw.n_pad)) if cw.zeros is None else cw.zeros.astype(np.float64)
    return z if cw.fractions is None else z + cw.fractions.astype(np.float64)
