"""Weight layout ``x86-g4-n64-v1`` read by codegen/cpu/lut_kernels.c (see the comment at its top)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...passes.quantize.packing import plane_indices
from ...passes.quantize.weight import QuantizedWeight

LAYOUT = "x86-g4-n64-v1"
TILE = 64
MAX_GROUP = 256  # int16 accumulators hold 64 runs of two planes: 64 * 127 * 3 < 2^15


@dataclass
class CpuWeight:
    """A QuantizedWeight repacked for the CPU kernels."""
    w: np.ndarray        # uint8 [tiles, runs, pairs, 64]
    scales: np.ndarray   # uint16 (f16 bits) [tiles, groups, 64]
    zeros: np.ndarray    # int8 z' = 2z + 1 - 2^b  [tiles, groups, 64]
    n: int
    k: int
    k_pad: int
    bits: int
    group_size: int

    @property
    def tiles(self) -> int:
        return self.w.shape[0]

    @property
    def nbytes(self) -> int:
        return self.w.nbytes + self.scales.nbytes + self.zeros.nbytes


def pack_cpu(qw: QuantizedWeight) -> CpuWeight:
    bits, n, gs = qw.bits, qw.n, qw.group_size
    if gs > MAX_GROUP or gs % 4:
        raise NotImplementedError(f"the CPU kernels take group sizes up to {MAX_GROUP} (multiples of 4), got {gs}")
    z = qw.zero_points().astype(np.float64)
    zs = 2 * z + 1 - (1 << bits)
    if not np.all(zs == np.round(zs)) or np.abs(zs).max(initial=0) > 127:
        raise NotImplementedError("the CPU kernels take integer zero points (GGUF Q4_1's real-valued zero points "
                                  "are not supported yet)")
    tiles = -(-n // TILE)
    n_pad = tiles * TILE
    codes = np.zeros((n_pad, qw.k_pad), np.uint8)
    codes[:n] = qw.codes
    idx = plane_indices(codes, bits)                                 # [bits, N_pad, runs]
    pairs = (bits + 1) // 2
    if bits % 2:
        idx = np.concatenate([idx, np.zeros_like(idx[:1])])          # the last pair's second plane weighs 0
    runs = idx.shape[2]
    a = idx.reshape(pairs, 2, tiles, 2, 32, runs)                    # [pair, q, tile, lo/hi half, i, run]
    byte = a[:, :, :, 0] | (a[:, :, :, 1] << 4)                      # [pair, q, tile, i, run]
    w = np.ascontiguousarray(byte.transpose(2, 4, 0, 3, 1)).reshape(tiles, runs, pairs, 64)

    def per_tile(v, dtype):
        out = np.zeros((n_pad, v.shape[1]), dtype)
        out[:n] = v
        return np.ascontiguousarray(out.reshape(tiles, TILE, -1).transpose(0, 2, 1))

    scales = per_tile(qw.scales.astype(np.float16), np.float16).view(np.uint16)
    zeros = per_tile(zs.astype(np.int8), np.int8)
    return CpuWeight(w, scales, zeros, n, qw.k, qw.k_pad, bits, gs)
