"""Bit-plane packing of weight codes: the layout every LUT kernel reads, versioned by a tag.

Layout ``bitplane-g4-sym-v1``: for each bit plane t (q = sum_t 2^t q_t) and each run of 4 consecutive K
positions, one 4-bit index holds the 4 bits of that plane. The index is stored *symmetrized*: a plane read
as +-1 makes the table odd (T[~i] = -T[i]), so only 8 entries are kept and the top index bit becomes a sign;
the inversion is done here, offline: stored nibble = idx if idx < 8 else 8 | (~idx & 7). Two nibbles per
byte (low nibble = even run). Shape ``[bits, N, K_pad // 8]`` uint8.
"""
from __future__ import annotations

import numpy as np

LAYOUT = "bitplane-g4-sym-v1"
G = 4


def symmetrize_index(idx: np.ndarray) -> np.ndarray:
    """4-bit plane index -> sign<<3 | 3-bit half-table index."""
    idx = idx.astype(np.uint8)
    return np.where(idx >= 8, 8 | (~idx & 7), idx).astype(np.uint8)


def desymmetrize_index(nib: np.ndarray) -> np.ndarray:
    nib = nib.astype(np.uint8)
    return np.where(nib >= 8, (~nib & 7) | 8, nib).astype(np.uint8)


def plane_indices(codes: np.ndarray, bits: int) -> np.ndarray:
    """codes [N, K] (K % 4 == 0) -> plain 4-bit indices [bits, N, K // 4]."""
    n, k = codes.shape
    if k % G:
        raise ValueError(f"K={k} must be a multiple of {G} to pack")
    planes = (codes[None].astype(np.uint8) >> np.arange(bits, dtype=np.uint8)[:, None, None]) & 1
    runs = planes.reshape(bits, n, k // G, G)
    return (runs << np.arange(G, dtype=np.uint8)).sum(-1).astype(np.uint8)


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """codes [N, K_pad] in [0, 2^bits) -> packed [bits, N, K_pad // 8] in layout ``LAYOUT``."""
    if codes.shape[1] % 8:
        raise ValueError(f"K_pad={codes.shape[1]} must be a multiple of 8 to pack two indices per byte")
    if codes.size and int(codes.max()) >= 1 << bits:
        raise ValueError(f"codes exceed {bits} bits")
    nib = symmetrize_index(plane_indices(codes, bits))
    return (nib[..., 0::2] | (nib[..., 1::2] << 4)).astype(np.uint8)


def unpack_indices(packed: np.ndarray) -> np.ndarray:
    """packed [bits, N, K_pad // 8] -> stored (symmetrized) nibbles [bits, N, K_pad // 4]."""
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), np.uint8)
    out[..., 0::2] = packed & 15
    out[..., 1::2] = packed >> 4
    return out


def unpack(packed: np.ndarray) -> np.ndarray:
    """The exact codes [N, K_pad] back from the packed planes."""
    idx = desymmetrize_index(unpack_indices(packed))          # [bits, N, J]
    bits, n, j = idx.shape
    runs = (idx[..., None] >> np.arange(G, dtype=np.uint8)) & 1  # [bits, N, J, 4]
    planes = runs.reshape(bits, n, j * G)
    return (planes.astype(np.uint16) << np.arange(bits, dtype=np.uint16)[:, None, None]).sum(0).astype(np.uint8)
