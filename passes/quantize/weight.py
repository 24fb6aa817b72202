"""Quantize one weight matrix ``W[N, K]`` per group along K: ``W ~= s * (q - z)``.

Methods: ``rtn`` (round to nearest of the min/max grid), ``clip`` (per-group search of the clipping range
that minimizes the squared error), ``gptq`` (see gptq.py). Ternary is BitNet b1.58 absmean: codes {0,1,2}
for {-1, 0, +1}, zero point 1. Symmetric grids centre on (2^b - 1) / 2, so they need no zero point.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import packing
from .config import LayerQuant, QuantConfig

CLIP_GRID = np.linspace(1.0, 0.5, 16)


@dataclass
class QuantizedWeight:
    codes: np.ndarray            # uint8 [N, K_pad], values in [0, 2^nbits)
    scales: np.ndarray           # [N, groups], float16 or float32
    zeros: np.ndarray | None     # [N, groups] same dtype as scales; None: symmetric (centre of the grid)
    config: LayerQuant
    k: int                       # K before padding

    @property
    def n(self) -> int:
        return self.codes.shape[0]

    @property
    def k_pad(self) -> int:
        return self.codes.shape[1]

    @property
    def group_size(self) -> int:
        return self.k_pad // self.scales.shape[1]

    @property
    def bits(self) -> int:
        return self.config.nbits

    def zero_points(self) -> np.ndarray:
        """z for every group (the grid centre when symmetric)."""
        if self.zeros is None:
            return np.full(self.scales.shape, ((1 << self.bits) - 1) / 2, np.float32)
        return self.zeros.astype(np.float32)

    def plane_zero_points(self) -> np.ndarray:
        """z' = 2z + 1 - 2^b [N, groups] float64: the zero point on the +-1 plane grid the kernels' tables use."""
        return 2 * self.zero_points().astype(np.float64) + 1 - (1 << self.bits)

    def dequantize(self) -> np.ndarray:
        """float32 [N, K]: the weights the kernels compute with."""
        gs = self.group_size
        s = np.repeat(self.scales.astype(np.float32), gs, axis=1)
        z = np.repeat(self.zero_points(), gs, axis=1)
        return (s * (self.codes.astype(np.float32) - z))[:, :self.k]

    def packed(self) -> np.ndarray:
        return packing.pack(self.codes, self.bits)

    @property
    def layout(self) -> str:
        return packing.LAYOUT

    @property
    def nbytes(self) -> int:
        return self.codes.size * self.bits // 8 + self.scales.nbytes + (0 if self.zeros is None else self.zeros.nbytes)


def padded_k(k: int, group_size: int | None) -> tuple[int, int]:
    """(K_pad, group size): K is padded with zeros up to whole groups, and to a multiple of 8 for packing."""
    if group_size is None:
        kp = -(-k // 8) * 8
        return kp, kp
    return -(-k // group_size) * group_size, group_size


def _scale_dtype(cfg: LayerQuant):
    return np.float16 if cfg.scale_dtype == "f16" else np.float32


def _grid(wg: np.ndarray, cfg: LayerQuant, shrink: np.ndarray | float = 1.0):
    """Scales and zero points [N, G] for grouped weights wg [N, G, gs] (range clipped by ``shrink``)."""
    qmax = (1 << cfg.nbits) - 1
    if cfg.ternary:
        s, lo = np.abs(wg).mean(-1) * shrink, None
    elif cfg.symmetric:
        s, lo = np.abs(wg).max(-1) * shrink / (qmax / 2), None
    else:
        lo, hi = np.minimum(wg.min(-1), 0) * shrink, np.maximum(wg.max(-1), 0) * shrink
        s = (hi - lo) / qmax
    # codes are computed with the scale as stored (f16), so dequantization matches the kernels exactly
    s = np.where(s > 0, s, 1.0).astype(_scale_dtype(cfg)).astype(np.float64)
    if cfg.ternary:
        return s, np.ones_like(s)
    return s, None if lo is None else np.clip(np.round(-lo / s), 0, qmax)


def _codes(wg, s, z, cfg: LayerQuant) -> np.ndarray:
    qmax = (1 << cfg.nbits) - 1
    if cfg.ternary:
        return (np.clip(np.round(wg / s[..., None]), -1, 1) + 1).astype(np.uint8)
    zz = qmax / 2 if z is None else z[..., None]
    return np.clip(np.round(wg / s[..., None] + zz), 0, qmax).astype(np.uint8)


def _dequant(q, s, z, cfg) -> np.ndarray:
    qmax = (1 << cfg.nbits) - 1
    zz = qmax / 2 if z is None else z[..., None]
    return s[..., None] * (q - zz)


def quantize_grouped(wg: np.ndarray, cfg: LayerQuant):
    """wg [N, G, gs] float64 -> (codes, scales, zeros) with the rtn or clip method."""
    if cfg.method == "clip":
        best_err, best = None, None
        grid = np.linspace(0.5, 1.5, 21) if cfg.ternary else CLIP_GRID
        for a in grid:
            s, z = _grid(wg, cfg, a)
            q = _codes(wg, s, z, cfg)
            err = ((_dequant(q, s, z, cfg) - wg) ** 2).sum(-1)
            if best is None:
                best_err, best = err, (q, s, z)
                continue
            better = err < best_err
            best_err = np.where(better, err, best_err)
            bq, bs, bz = best
            best = (np.where(better[..., None], q, bq), np.where(better, s, bs),
                    None if z is None else np.where(better, z, bz))
        return best
    s, z = _grid(wg, cfg)
    return _codes(wg, s, z, cfg), s, z


def quantize_weight(w, config: QuantConfig | LayerQuant | None = None, hessian: np.ndarray | None = None,
                    **overrides) -> QuantizedWeight:
    """Quantize ``w[N, K]`` (numpy or torch). K is zero-padded to whole groups.

    ``method="gptq"`` needs ``hessian`` (``X^T X`` of the layer's inputs, [K, K]).
    """
    cfg = config.base() if isinstance(config, QuantConfig) else (config or LayerQuant())
    if overrides:
        from dataclasses import replace

        cfg = replace(cfg, **overrides)
    cfg.validate()
    w = np.asarray(w.detach().cpu().numpy() if hasattr(w, "detach") else w, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"quantize_weight expects a 2-D weight [N, K], got shape {w.shape}")
    n, k = w.shape
    kp, gs = padded_k(k, cfg.group_size)
    wp = np.zeros((n, kp)) if kp != k else w.copy()
    wp[:, :k] = w
    if cfg.method == "gptq":
        from .gptq import gptq

        if hessian is None:
            raise ValueError("method='gptq' needs a hessian (X^T X of calibration inputs); pass calibration data")
        codes, s, z = gptq(wp, cfg, _pad_hessian(np.asarray(hessian, np.float64), kp), gs)
    else:
        q, s, z = quantize_grouped(wp.reshape(n, kp // gs, gs), cfg)
        codes = q.reshape(n, kp)
    dt = _scale_dtype(cfg)
    return QuantizedWeight(codes, s.astype(dt), None if z is None else z.astype(dt), cfg, k)


def _pad_hessian(h: np.ndarray, kp: int) -> np.ndarray:
    if h.shape[0] == kp:
        return h
    out = np.zeros((kp, kp))
    out[:h.shape[0], :h.shape[0]] = h
    return out
