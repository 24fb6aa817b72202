"""Weight layout ``x86-g4-n64-v2`` read by the CPU micro-kernels (codegen/cpu/lut_common.h says it in C): per
64-row tile, ``runs`` x (bits // 2) full lines of 64 bytes (byte 2i+q: plane 2p+q's 4-bit index of row i in the
low nibble, of row i+32 in the high one), then for odd widths ``runs`` half lines of 32 bytes with the last plane
alone. ``v1`` gave that plane an all-zero partner, so W3 moved as many bytes as W4 and W1 as W2; artifacts
built with it keep their own libraries (runtime/lut.py takes both shapes).

Zero points: the kernels take z' = 2z + 1 - 2^b as int8 (half-integer z). A real-valued one (GGUF Q4_1 and the
K-quants' mins) is split into the nearest such z_i (clipped to the grid) and a per-group offset
o = -s (z - z_i), so that W = s (q - z_i) + o: the kernels compute the first term and add o * xsum per group
(lut_kernels.c ``lutc_offsets``, xsum: the group's activation sum as the kernel's tables or int8 activations hold
it). The offsets are f16 (|o| <= s/2 inside the grid: rounding them costs < 2^-12 s per weight; 8-bit weights,
whose z' reaches +-255, clip z_i' to int8's +-127 and carry up to 64 s in o: up to 2^-5 s), stored after the scales
in the same array, so no kernel signature changes: scales [2 * tiles, groups, 64], the offsets of tile t at row
tiles + t."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...passes.quantize.packing import plane_indices
from ...passes.quantize.weight import QuantizedWeight
from ...runtime.lut import LAYOUTS

LAYOUT = LAYOUTS[-1]  # "x86-g4-n64-v2"; the runtime also reads v1
TILE = 64
MAX_GROUP = 256  # int16 accumulators hold 64 runs of two planes: 64 * 127 * 3 < 2^15


def tile_bytes(runs: int, bits: int) -> int:
    """Bytes of one 64-row tile's weights (lut_common.h ``tile_bytes``)."""
    return runs * ((bits // 2) * 64 + (bits % 2) * 32)


@dataclass
class CpuWeight:
    """A QuantizedWeight repacked for the CPU kernels."""
    w: np.ndarray        # uint8 [tiles, tile_bytes(runs, bits)]
    scales: np.ndarray   # uint16 (f16 bits) [tiles, groups, 64], then the f16 offsets of real zero points if any
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
    def runs(self) -> int:
        return self.k_pad // 4

    @property
    def nbytes(self) -> int:
        return self.w.nbytes + self.scales.nbytes + self.zeros.nbytes

    @property
    def offsets(self) -> bool:
        """Whether the scales array holds the offsets of real-valued zero points after the scales."""
        return self.scales.shape[0] == 2 * self.tiles


ROW_GROUP = 128  # the kernels' group for a weight with one scale per row: the size their int8 tables are tested at


def kernel_grouping(k_pad: int, group_size: int, groups: int) -> tuple[int, int]:
    """(group, K_pad) the kernels run a weight with: its own, or, for groups above ``MAX_GROUP``, sub-groups that
    repeat the group's scale and zero point (the same weights): for one group per row (per-channel scales, as in
    GPTQ without groups or BitNet) ``ROW_GROUP`` with K padded by zero codes (the activations there are zero),
    otherwise the largest multiple of 4 up to ``MAX_GROUP`` that divides the group."""
    if group_size <= MAX_GROUP and group_size % 4 == 0:
        return group_size, k_pad
    if groups == 1:
        return ROW_GROUP, -(-k_pad // ROW_GROUP) * ROW_GROUP
    for g in range(MAX_GROUP, 3, -4):
        if group_size % g == 0:
            return g, k_pad
    raise NotImplementedError(f"the CPU kernels take group sizes that are multiples of 4 (up to {MAX_GROUP}, or "
                              f"larger ones that split into such groups, or one group per row), got {group_size}")


def pack_cpu(qw: QuantizedWeight) -> CpuWeight:
    bits, n = qw.bits, qw.n
    gs, k_pad = kernel_grouping(qw.k_pad, qw.group_size, qw.scales.shape[1])
    split = k_pad // gs // qw.scales.shape[1]   # kernel groups per weight group
    zs, offsets = kernel_zero_points(qw)
    tiles = -(-n // TILE)
    n_pad = tiles * TILE
    codes = np.zeros((n_pad, k_pad), np.uint8)
    codes[:n, :qw.k_pad] = qw.codes
    idx = plane_indices(codes, bits)                                 # [bits, N_pad, runs]
    full, runs = bits // 2, idx.shape[2]
    a = idx[:2 * full].reshape(full, 2, tiles, 2, 32, runs)          # [pair, q, tile, lo/hi half, i, run]
    byte = a[:, :, :, 0] | (a[:, :, :, 1] << 4)                      # [pair, q, tile, i, run]
    parts = [np.ascontiguousarray(byte.transpose(2, 4, 0, 3, 1)).reshape(tiles, runs * full * 64)]
    if bits % 2:  # the last plane alone: byte i = row i (low nibble), row i + 32 (high)
        last = idx[-1].reshape(tiles, 2, 32, runs)
        parts.append(np.ascontiguousarray((last[:, 0] | (last[:, 1] << 4)).transpose(0, 2, 1)).reshape(tiles, runs * 32))
    w = np.ascontiguousarray(np.concatenate(parts, axis=1))
    assert w.shape[1] == tile_bytes(runs, bits)

    def per_group(v, dtype):  # [N, groups] -> [tiles, kernel groups, 64]
        out = np.zeros((n_pad, v.shape[1] * split), dtype)
        out[:n] = np.repeat(v.astype(dtype), split, axis=1)
        return np.ascontiguousarray(out.reshape(tiles, TILE, -1).transpose(0, 2, 1))

    scales = per_group(qw.scales, np.float16)
    if offsets is not None:
        scales = np.concatenate([scales, per_group(offsets, np.float16)])
    zeros = per_group(zs, np.int8)
    return CpuWeight(w, scales.view(np.uint16), zeros, n, qw.k, k_pad, bits, gs)


def kernel_zero_points(qw: QuantizedWeight) -> tuple[np.ndarray, np.ndarray | None]:
    """(z' [N, groups] as int8 values, offsets [N, groups] float64 or None): integer z' within int8 as they are;
    otherwise (real-valued zero points, or ones far off the grid) the nearest z' on the grid [1 - 2^b, 2^b - 1]
    that int8 holds (8-bit weights: z' reaches +-255) and the offset -s/2 (z' - z_i') that makes up the difference
    (module docstring)."""
    z = qw.plane_zero_points()
    if np.all(z == np.round(z)) and np.abs(z).max(initial=0) <= 127:
        return z, None
    top = min((1 << qw.bits) - 1, 127)
    zi = np.clip(np.round(z), -top, top)
    return zi, -qw.scales.astype(np.float64) / 2 * (z - zi)
