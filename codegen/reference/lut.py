"""The LUT matmul, written out in numpy: build tables of activation sums, look them up by weight bits.

Symmetrized tables (the default): each bit plane is read as +-1, so for 4 activations the 16 signed sums
form an odd table; the 8 entries with the top index bit clear are stored and the packed weight nibble
carries a sign bit. With W = s * (q - z) and q' = 2q - (2^b - 1):

    y[m, n] = sum_groups s/2 * ( sum_t 2^t sum_j T[m, j, idx_t(n, j)] - z' * sum_k x[m, k] ),  z' = 2z + 1 - 2^b

int8 tables carry one scale per (row, K group); lookups then sum integers and are rescaled once per group.
"""
from __future__ import annotations

import numpy as np

from ...passes.quantize.packing import G, desymmetrize_index, unpack_indices


def _sign_matrix(symmetric: bool) -> np.ndarray:
    """[entries, 4]: entry e's coefficient for activation i (+-1 symmetrized, 0/1 otherwise)."""
    e = np.arange(8 if symmetric else 16)[:, None]
    bits = (e >> np.arange(G)) & 1
    return (2 * bits - 1) if symmetric else bits


def precompute(x: np.ndarray, k_pad: int, group_size: int, table_dtype: str, symmetric: bool = True):
    """x [..., K] -> tables [..., K_pad/4, E], table_scales [..., G], xsum [..., G]."""
    k = x.shape[-1]
    xp = np.concatenate([x, np.zeros(x.shape[:-1] + (k_pad - k,), x.dtype)], axis=-1) if k_pad > k else x
    runs = xp.reshape(x.shape[:-1] + (k_pad // G, G))
    tables = runs @ _sign_matrix(symmetric).T.astype(x.dtype)
    groups = k_pad // group_size
    if table_dtype != "int8":
        out = tables.astype(np.float32 if x.dtype != np.float64 else x.dtype)
        scale = np.ones(x.shape[:-1] + (groups,), out.dtype)
    else:
        tg = tables.reshape(x.shape[:-1] + (groups, -1))
        scale = np.abs(tg).max(-1) / 127
        scale = np.where(scale > 0, scale, 1).astype(np.float32)
        out = np.clip(np.round(tg / scale[..., None]), -127, 127).astype(np.int8).reshape(tables.shape)
    return out, scale, group_sums(out, scale, symmetric)


def group_sums(tables: np.ndarray, scale: np.ndarray, symmetric: bool = True) -> np.ndarray:
    """sum_k x over each K group, read from the tables themselves (entry 0 holds -(x0+x1+x2+x3) when
    symmetrized, entry 15 holds the plain sum): with int8 tables the zero-point term then carries the same
    rounding as the lookups and cancels with them instead of adding to the error."""
    groups = scale.shape[-1]
    col = -tables[..., 0] if symmetric else tables[..., 15]
    runs = col.astype(np.float64).reshape(tables.shape[:-2] + (groups, -1)).sum(-1)
    return (runs * scale).astype(scale.dtype)


_ONEHOT: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_ONEHOT_BUDGET = 2 << 30  # bytes of cached one-hot weights (a whole 135M-parameter model fits)


def cached_onehot(packed: np.ndarray, symmetric: bool = True) -> np.ndarray:
    """signed_onehot, memoized per weight array: constant weights are looked up on every call."""
    key = (id(packed), symmetric)
    hit = _ONEHOT.get(key)
    if hit is not None and hit[0] is packed:
        return hit[1]
    o = signed_onehot(packed, symmetric)
    while _ONEHOT and sum(v[1].nbytes for v in _ONEHOT.values()) + o.nbytes > _ONEHOT_BUDGET:
        _ONEHOT.pop(next(iter(_ONEHOT)))
    _ONEHOT[key] = (packed, o)
    return o


def signed_onehot(packed: np.ndarray, symmetric: bool = True) -> np.ndarray:
    """packed weights [bits, N, K_pad/8] -> O [N, K_pad/4, E] with O = sum_t 2^t * (+-onehot of idx_t).

    ``tables . O`` is then exactly the sum of the looked-up entries (integers stay exact in float64)."""
    nib = unpack_indices(packed)                                  # [bits, N, J] symmetrized nibbles
    bits, n, j = nib.shape
    weight = (1 << np.arange(bits)).astype(np.float64)[:, None, None]
    if symmetric:
        sign = np.where(nib >= 8, -1.0, 1.0) * weight
        idx, entries = nib & 7, 8
    else:
        sign = np.broadcast_to(weight, nib.shape)
        idx, entries = desymmetrize_index(nib), 16
    out = np.zeros((n, j, entries), np.float32)  # integers below 2^24: exact
    nn, jj = np.ogrid[:n, :j]
    for t in range(bits):  # within one plane every (n, j) picks one entry: no duplicate indices
        out[nn, jj, idx[t]] += sign[t]
    return out


def lut_matmul(tables, table_scales, xsum, packed, scales, zeros, bias, *, bits: int, group_size: int,
               symmetric: bool = True, onehot: np.ndarray | None = None) -> np.ndarray:
    """tables [..., J, E] x packed weights -> [..., N] float32 (float64 when the tables are float64)."""
    lead = tables.shape[:-2]
    j, e = tables.shape[-2:]
    n = packed.shape[1]
    groups = table_scales.shape[-1]
    o = cached_onehot(packed, symmetric) if onehot is None else onehot
    # int8 tables: per-group sums of int8 x small integers stay below 2^24, so float32 is exact
    work = np.float64 if tables.dtype == np.float64 else np.float32
    t = tables.reshape((-1, groups, (j // groups) * e)).astype(work)                  # [M, G, X]
    ow = o.astype(work).reshape(n, groups, -1)                                          # [N, G, X]
    s = scales.astype(np.float64)                                                       # [N, G]
    z = np.full(scales.shape, ((1 << bits) - 1) / 2) if zeros is None else zeros.astype(np.float64)
    zz = (2 * z + 1 - (1 << bits)) if symmetric else z                                 # zero point on the grid read
    half = 0.5 if symmetric else 1.0
    ts = table_scales.reshape(-1, groups).astype(np.float64)
    # lookups summed per K group, rescaled once per group by the table scale and the weight scale
    y = np.zeros((t.shape[0], n))
    for grp in range(groups):
        acc = (t[:, grp] @ ow[:, grp].T).astype(np.float64)                            # [M, N]
        y += acc * ts[:, grp:grp + 1] * (half * s[:, grp])
    y -= xsum.reshape(-1, groups).astype(np.float64) @ (half * s * zz).T
    if bias is not None:
        y = y + bias
    out_dtype = np.float64 if tables.dtype == np.float64 else np.float32
    return y.reshape(lead + (n,)).astype(out_dtype)
