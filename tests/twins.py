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
