"""Weight layout ``cuda-g4-c128-v1`` read by the CUDA LUT kernels (codegen/cuda/tir.py).

K is cut into chunks of 128 (32 runs of 4 activations); N is padded to a multiple of 128 (padded rows get
scale 0, padded K positions meet zero activations, so neither contributes). For every chunk ``c``, bit
plane ``t`` and row ``n`` the 32 plain 4-bit plane indices of that chunk (bit i of index r = plane bit of
activation ``c*128 + 4r + i``) fill four 32-bit words, index r in bits ``4*(r%8)`` of word ``r//8``:

    w[C, bits, N_pad, 4] uint32     one 16-byte load per (chunk, plane, row); a warp reads 512 contiguous bytes
    scales[G, N_pad] float16        s per (K group, row), transposed so that a warp's 32 rows are contiguous
    zeros[G, N_pad] int8            z' = 2z + 1 - 2^b (the zero point on the +-1 plane grid); None: symmetric

Real-valued zero points (GGUF Q4_1 and the k-quants' mins: z = m / s), or integer ones beyond int8, are split
into the nearest integer z_i' (clipped to int8) and the fraction e = z' - z_i' (float16; |e| <= 1/2 inside the
grid, so rounding it costs at most 2^-13 s per weight). The fractions ride as G more rows after the scales
(scales[2G, N_pad]: ``CudaWeight.scale_rows``), so no kernel signature changes; each kernel adds them to its
zero-point term (the table and dp4a kernels: ``(z_i' + e) sum x`` in float32; the tensor-core ones: one
``hfma2`` with ``-e s/2`` instead of the ``hmul2`` by ``s/2``, the ``1024 + z_i' + 2^b - 1`` trick stays exact).

The kernels use the full 16-entry signed table T[idx] = sum_i (2 bit_i(idx) - 1) x_i, so no index inversion
is stored: ``y = sum_groups s/2 * (sum_t 2^t sum_runs T[idx_t] - z' * sum_group x)``.

Layouts ``cuda-n4-c128-v1``, ``cuda-n2-c128-v1``, ``cuda-n1-c128-v1`` (``codes=True``: 4-, 2- and 1-bit weights,
ternary as 2-bit codes, for the dequantizing kernels): the same [C, b, N_pad, 4] words, but each word holds
``32 / b`` b-bit codes instead of plane indices, so a weight is one bit field (one op to dequantize) instead of b
plane bits. With F = 16 / b, word ``i`` of slot ``t`` (the "plane" axis) of a chunk holds the codes of the K
positions ``32 i + F t + f`` in field ``f`` and ``32 i + F t + f + 16`` in field ``F + f`` (f < F):
``(word >> b f) & (2^b - 1) * 0x10001`` is the code pair of a half2 ``(k, k + 16)``, the pair the tensor-core
kernel's fragments hold, and the 16-byte load of a slot and row is 32 / b * 4 weights of one 128-K chunk, as
with planes. The bit-serial LUT kernel needs planes; 3-bit codes do not tile a word, so 3 bits keep them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...passes.quantize.packing import plane_indices
from ...passes.quantize.weight import QuantizedWeight

LAYOUT = "cuda-g4-c128-v1"
CODE_LAYOUTS = {4: "cuda-n4-c128-v1", 2: "cuda-n2-c128-v1", 1: "cuda-n1-c128-v1"}   # bits -> layout of b-bit codes
CHUNK = 128      # K per chunk: 32 runs of 4, four 32-bit words per plane and row
ROWS = 128       # rows per thread block; N is padded to a multiple of this


@dataclass
class CudaWeight:
    """A QuantizedWeight repacked for the CUDA kernels (numpy arrays, host memory)."""
    w: np.ndarray            # uint32 [C, bits, N_pad, 4]
    scales: np.ndarray       # float16 [G, N_pad]
    zeros: np.ndarray | None  # int8 [G, N_pad] or None (symmetric: z' = 0)
    n: int
    k: int
    bits: int
    group_size: int          # the kernel's group size (K_pad for one group per row)
    layout: str = LAYOUT
    fractions: np.ndarray | None = None   # float16 [G, N_pad]: real zero points' z' - z_i' (module docstring)

    @property
    def chunks(self) -> int:
        return self.w.shape[0]

    @property
    def n_pad(self) -> int:
        return self.w.shape[2]

    @property
    def k_pad(self) -> int:
        return self.chunks * CHUNK

    @property
    def groups(self) -> int:
        return self.scales.shape[0]

    @property
    def real_zero(self) -> bool:
        return self.fractions is not None

    def scale_rows(self) -> np.ndarray:
        """The kernels' scales argument: the scales, then the zero-point fractions if any."""
        return self.scales if self.fractions is None else np.concatenate([self.scales, self.fractions])

    def zero_rows(self) -> np.ndarray:
        """The kernels' zeros argument (zeros for symmetric weights: every kernel takes one)."""
        return self.zeros if self.zeros is not None else np.zeros((self.groups, self.n_pad), np.int8)

    @property
    def nbytes(self) -> int:
        extra = sum(a.nbytes for a in (self.zeros, self.fractions) if a is not None)
        return self.w.nbytes + self.scales.nbytes + extra


def check_supported(qw: QuantizedWeight) -> None:
    """Raise NotImplementedError with the reason when the CUDA kernels cannot take ``qw``."""
    gs = qw.group_size
    if qw.bits > 4:
        raise NotImplementedError(f"the CUDA LUT kernels take 1-4 bit planes (and ternary), got {qw.bits} bits")
    if qw.scales.shape[1] > 1 and not (gs % CHUNK == 0 or CHUNK % gs == 0):
        raise NotImplementedError(f"the CUDA LUT kernels take group sizes that divide {CHUNK} or are multiples of "
                                  f"it (8, 16, 32, 64, 128, 256, ...) or one group per row, got {gs}")


def kernel_zero_points(qw: QuantizedWeight) -> tuple[np.ndarray, np.ndarray | None]:
    """(z_i' [N, groups] int8 values, fractions [N, groups] float64 or None): integer z' = 2z + 1 - 2^b within
    int8 as they are; otherwise the nearest integers clipped to int8 and the fractions z' - z_i'."""
    z = qw.plane_zero_points()
    if np.all(z == np.round(z)) and np.abs(z).max(initial=0) <= 127:
        return z, None
    zi = np.clip(np.round(z), -127, 127)
    return zi, z - zi


def code_words(codes: np.ndarray, bits: int) -> np.ndarray:
    """b-bit codes [N_pad, C * 128] -> words [C, b, N_pad, 4] of layout ``CODE_LAYOUTS[b]``."""
    n_pad, kp = codes.shape
    f = 16 // bits
    c = codes.reshape(n_pad, kp // CHUNK, 4, 2, bits, f).astype(np.uint32)   # [n, chunk, i, half, t, f]
    fld = c.transpose(1, 4, 0, 2, 3, 5).reshape(kp // CHUNK, bits, n_pad, 4, 2 * f)  # [chunk, t, n, i, field]
    # compact: the kernels' buffers are compact arrays (the sum of a transposed view is not, for 1-bit words)
    return np.ascontiguousarray((fld << (bits * np.arange(2 * f, dtype=np.uint32))).sum(-1, dtype=np.uint32))


def pack_cuda(qw: QuantizedWeight, codes: bool = False) -> CudaWeight:
    """Repack ``qw`` into layout ``cuda-g4-c128-v1`` (bit planes), or with ``codes`` (1, 2 and 4 bits, ternary)
    into ``CODE_LAYOUTS[bits]``."""
    if not isinstance(qw, QuantizedWeight):
        raise TypeError(f"pack_cuda takes a lutc.QuantizedWeight, got {type(qw).__name__}")
    check_supported(qw)
    if codes and qw.bits not in CODE_LAYOUTS:
        raise ValueError(f"the code layouts hold {sorted(CODE_LAYOUTS)}-bit codes (a word of 32 bits), got {qw.bits}-bit "
                         "weights: they keep bit planes")
    bits, n, gs = qw.bits, qw.n, qw.group_size
    chunks = -(-qw.k_pad // CHUNK)
    kp, n_pad = chunks * CHUNK, -(-n // ROWS) * ROWS
    if qw.scales.shape[1] == 1:
        gs = kp  # one group per row
    padded = np.zeros((n_pad, kp), np.uint8)
    padded[:n, :qw.k_pad] = qw.codes
    if codes:
        w = code_words(padded, bits)
    else:
        idx = plane_indices(padded, bits).astype(np.uint32)          # [bits, N_pad, runs]
        idx = idx.reshape(bits, n_pad, chunks, 4, 8)                # run r of a chunk = word r//8, nibble r%8
        words = (idx << (4 * np.arange(8, dtype=np.uint32))).sum(-1, dtype=np.uint32)   # [bits, N_pad, C, 4]
        w = np.ascontiguousarray(words.transpose(2, 0, 1, 3))       # [C, bits, N_pad, 4]
    groups = kp // gs if gs <= CHUNK else qw.scales.shape[1]
    scales = np.zeros((groups, n_pad), np.float16)
    scales[:qw.scales.shape[1], :n] = qw.scales.astype(np.float16).T
    zeros = fractions = None
    if qw.zeros is not None:
        zi, frac = kernel_zero_points(qw)
        zeros = np.zeros((groups, n_pad), np.int8)
        zeros[:qw.scales.shape[1], :n] = zi.astype(np.int8).T
        if frac is not None:
            fractions = np.zeros((groups, n_pad), np.float16)
            fractions[:qw.scales.shape[1], :n] = frac.astype(np.float16).T
    return CudaWeight(w, scales, zeros, n, qw.k, bits, gs, CODE_LAYOUTS[bits] if codes else LAYOUT, fractions)


def unpack_codes(cw: CudaWeight) -> np.ndarray:
    """The codes [N, K_pad(cuda)] back from a CudaWeight (tests: the repack round-trips)."""
    if cw.layout in CODE_LAYOUTS.values():
        b, f = cw.bits, 16 // cw.bits
        fld = (cw.w[..., None] >> (b * np.arange(2 * f, dtype=np.uint32))) & ((1 << b) - 1)   # [chunk, t, n, i, field]
        fld = fld.reshape(cw.chunks, b, cw.n_pad, 4, 2, f).transpose(2, 0, 3, 4, 1, 5)      # [n, chunk, i, half, t, f]
        return fld.reshape(cw.n_pad, -1)[:cw.n].astype(np.uint8)
    w = cw.w.transpose(1, 2, 0, 3)                                  # [bits, N_pad, C, 4]
    nib = (w[..., None] >> (4 * np.arange(8, dtype=np.uint32))) & 15  # [bits, N_pad, C, 4, 8]
    idx = nib.reshape(cw.bits, cw.n_pad, -1)                        # [bits, N_pad, runs]
    planes = (idx[..., None] >> np.arange(4, dtype=np.uint32)) & 1   # [bits, N_pad, runs, 4]
    planes = planes.reshape(cw.bits, cw.n_pad, -1)
    codes = (planes << np.arange(cw.bits, dtype=np.uint32)[:, None, None]).sum(0)
    return codes[:cw.n].astype(np.uint8)
