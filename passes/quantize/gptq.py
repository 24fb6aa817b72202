"""GPTQ (Frantar et al., 2022): quantize columns in order, spreading each column's rounding error over
the columns not yet quantized, weighted by the inverse Hessian of the layer's inputs (H = X^T X)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .config import LayerQuant
from .weight import _codes, _dequant, quantize_grouped


def gptq(w: np.ndarray, cfg: LayerQuant, h: np.ndarray, gs: int, damp: float = 0.01):
    """w [N, K_pad] float64, h [K_pad, K_pad] -> (codes [N, K_pad], scales [N, G], zeros [N, G] | None)."""
    w = w.copy()
    h = h.copy()
    n, k = w.shape
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices(k)] += damp * np.mean(np.diag(h))
    # upper Cholesky factor of H^-1: row i holds how column i's error spreads to the columns after it
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    codes = np.zeros((n, k), np.uint8)
    scales, zeros = np.zeros((n, k // gs)), np.zeros((n, k // gs))
    for g0 in range(0, k, gs):  # one block per group: group parameters come from the updated weights
        g1 = g0 + gs
        # the group's grid is the MSE-optimal clip of its current (error-compensated) weights
        _, s, z = quantize_grouped(w[:, None, g0:g1], replace(cfg, method="clip"))
        s, z = s[:, 0], None if z is None else z[:, 0]
        scales[:, g0 // gs] = s
        if z is not None:
            zeros[:, g0 // gs] = z
        block, err = w[:, g0:g1].copy(), np.zeros((n, gs))
        ub = u[g0:g1, g0:g1]
        for i in range(gs):
            col = block[:, i]
            q = _codes(col[:, None, None], s[:, None], None if z is None else z[:, None], cfg)[:, 0, 0]
            dq = _dequant(q[:, None, None].astype(np.float64), s[:, None], None if z is None else z[:, None], cfg)
            e = (col - dq[:, 0, 0]) / ub[i, i]
            block[:, i:] -= e[:, None] * ub[i, i:][None, :]
            err[:, i] = e
            codes[:, g0 + i] = q
        w[:, g1:] -= err @ u[g0:g1, g1:]
    return codes, scales, None if (cfg.symmetric and not cfg.ternary) else zeros
