"""CUDA LUT kernels: correctness against numpy float64 and speed against cuBLAS fp16 and torch int4, in one run.

    python -m lutc.bench.gpu --prepare      # on the build machine (TVM + nvcc, no GPU): build every kernel
                                            # library the run needs into $LUTC_CACHE
    python -m lutc.bench.gpu --out DIR      # on the GPU machine (torch, tvm_ffi, the TVM runtime libraries):
                                            # checks, then timings; writes DIR/gpu_check.log, gpu.json, gpu.md

Checks: random awkward shapes, bits 1-4 and ternary, group sizes 32..256 and per row, symmetric and not,
M = 1, 3, 17, 70, 128, 130, 200, float16/bfloat16/float32 activations, float32/float16 output (float32 also with the fused residual
add), K split over blocks or not (ragged too), against ``x @ W_deq.T`` (+ r) in float64 (x as the kernel sees
it, rounded to its dtype).
Timings: CUDA events, medians; every method rotates through enough weight copies (> 4x the L2) that
each call reads its weights from HBM; the queue is pre-filled (``torch.cuda._sleep``) so CPU launch cost does
not show up as GPU idle time inside a measurement. HBM bandwidth = device-to-device copy (read + write bytes).
"""
from __future__ import annotations

import argparse
import json
import dataclasses
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SHAPES = [(4096, 4096), (11008, 4096), (14336, 4096)]
MS = [1, 4, 16, 128]
METHODS = {"W4": dict(bits=4, group_size=128), "W2": dict(bits=2, group_size=128),
           "ternary": dict(bits="ternary", group_size=128),
           "W4-planes": dict(bits=4, group_size=128, kind="lut"),   # bit planes: the LUT kernel, as before the
           "W2-planes": dict(bits=2, group_size=128, kind="lut")}   # dp4a GEMV (beside it in the table: `planes`)
GEMV_CPS = [1, 2, 4, 8]        # chunks per block swept for M = 1 with --sweep (the default: a heuristic)
GEMV_MAXREG = [0, 64]          # nvcc -maxrregcount swept for M = 1 with --sweep (0: nvcc's choice)
MMA_CPS = [2, 4, 8, 32]        # chunks per block of the tensor-core kernel swept for W2 at M > 1
SMS = 132                      # H100 SXM / H200
ARCH = "sm_90a"

# (n, k, group, symmetric (or "real": real-valued zero points, as GGUF's mins), bits list,
#  [(m, x dtype, y dtype, cps override)])
CHECKS = [
    (100, 300, 64, False, [1, 2, 3, 4, "ternary"],
     [(1, "float16", "float32", None), (3, "float16", "float32", None), (17, "float16", "float32", None),
      (1, "float16", "float32", 99)]),
    (130, 1000, 128, True, [1, 2, 3, 4, "ternary"],
     [(1, "float16", "float32", None), (17, "float16", "float32", 3), (1, "float32", "float32", 3),
      (1, "bfloat16", "float32", None), (17, "bfloat16", "float32", None)]),
    (65, 257, 32, False, [1, 2, 3, 4, "ternary"],
     [(1, "float16", "float16", None), (17, "float16", "float16", None), (3, "bfloat16", "float16", None)]),
    (257, 4100, None, False, [2, 4], [(1, "float16", "float32", None), (17, "float16", "float32", None)]),
    (1000, 2048, 256, False, [2, 4, "ternary"],
     [(1, "float16", "float32", None), (17, "float16", "float32", None), (128, "float16", "float32", None)]),
    (2000, 1536, 8, False, [2], [(1, "float16", "float32", None), (5, "float16", "float32", None)]),
    # the prefill GEMMs at awkward row counts: wgmma.py (float16), gemm.py (float32 activations), K split or not
    (300, 1000, 128, False, [1, 2, 4, "ternary"],
     [(70, "float16", "float32", None), (70, "float32", "float32", None), (200, "float16", "float16", 2),
      (130, "float32", "float16", None)]),
    # real-valued zero points in every kernel: table lookups and dp4a (M <= 3), mma, both prefill GEMMs
    (300, 1000, 64, "real", [1, 2, 3, 4, "ternary"],
     [(1, "float16", "float32", None), (3, "float16", "float32", None), (17, "float16", "float32", None),
      (130, "float16", "float32", None), (70, "float32", "float32", None), (1, "float16", "float32", 2),
      (3, "float16", "float32", 2)]),
    (65, 257, 32, "real", [2, 4], [(1, "bfloat16", "float16", None), (17, "float16", "float16", None)]),
]


def _quant(n, k, group, sym, bits, seed):
    import lutc
    from lutc.passes.quantize import LayerQuant

    rng = np.random.default_rng(seed)
    q = lutc.quantize_weight(rng.standard_normal((n, k)).astype(np.float32),
                             LayerQuant(bits=bits, group_size=group, symmetric=sym is True and bits != "ternary"))
    if sym == "real":   # z = m / s off the integers (codegen/cuda/layout.py: int8 z_i' and float16 fractions)
        q = dataclasses.replace(q, zeros=(q.zero_points() + rng.uniform(-0.5, 0.5, q.scales.shape)).astype(np.float32))
    return q


def check_cases():
    seed = 0
    for n, k, group, sym, bitss, runs in CHECKS:
        for bits in bitss:
            seed += 1
            q = _quant(n, k, group, sym, bits, seed)
            for m, xdt, ydt, cps in runs:
                yield q, m, xdt, ydt, cps, seed


def _kernel(q, ydt, cps=None, m=1, kind=None):
    """The kernel for ``q`` (``cps``: chunks per block of the kernel that ``m`` rows use; ``kind``: forced)."""
    from lutc.codegen.cuda.kernel import CudaLutMatmul

    f = CudaLutMatmul(q, out_dtype=ydt, arch=ARCH, sms=SMS, kind=kind)
    if cps is not None:
        f._cps = {f.plan(m)[1]: cps}
    return f


def _other_tile(f, m):
    """The tile ``f`` does not use for ``m`` (> 32) rows: the prefill GEMM's 64 or 128, the tensor-core
    kernel's 32 or 64."""
    kind, mt = f.plan(m)
    if kind == "gemm":
        return 64 if mt == 128 else 128
    return 32 if mt == 64 else 64


def _tolerance(f, m, ydt, xdt="float16"):
    """float16 output: 2e-3 (its rounding). float32 output: 1e-4 for the LUT kernel (float32 tables), 2e-3 for
    the tensor-core kernel (weights dequantized to float16: each rounded by up to 2^-11 relative). The 4-bit dp4a
    GEMV: 2e-2 (activations rounded to int8 per 32 K: ~0.5% rms for Gaussian ones, tests/codegen/test_cuda_dq.py
    bounds it per row)."""
    kind = f.plan(m, xdt)[0]
    if kind == "dq":
        return 2e-2
    return 2e-3 if ydt == "float16" or kind in ("mma", "gemm", "wgmma") else 1e-4


def bench_weights():
    for n, k in SHAPES:
        for name, cfg in METHODS.items():
            yield (n, k, name), _quant(n, k, cfg["group_size"], False, cfg["bits"], 1234)


def _bench_kernel(name, q, cps=None, m=1):
    return _kernel(q, "float16", cps, m, kind=METHODS[name].get("kind"))


def prepare(sweep=False, bench=True):
    t0 = time.time()
    count = 0
    for q, m, xdt, ydt, cps, _ in check_cases():
        for residual in (False, True) if ydt == "float32" else (False,):
            _kernel(q, ydt, cps, m).build(m, xdt, residual)
            count += 1
    for (n, k, name), q in bench_weights() if bench else ():
        for m in MS:
            base = _bench_kernel(name, q)
            base.build(m, "float16")
            count += 1
            if m > 1 and not base.codes and base.plan(m)[0] != "lut":   # what the tensor-core kernel replaced
                _kernel(q, "float16", kind="lut").build(m, "float16")
                count += 1
            if m >= 64 and base.plan(m)[0] in ("mma", "gemm"):   # the other tile of M > 32
                k_ = _bench_kernel(name, q)
                k_._mma_tile = _other_tile(k_, m)
                k_.build(m, "float16")
                count += 1
            if base.plan(m)[0] in ("gemm", "wgmma"):   # the kernels the prefill GEMM replaced or stands in for
                for kind in ("mma", "gemm") if base.plan(m)[0] == "wgmma" else ("mma",):
                    _kernel(q, "float16", m=m, kind=kind).build(m, "float16")
                    count += 1
            if base.params(m).pdl:   # the dp4a GEMV launched after its predecessor (no PDL), beside it
                base._pdl = ""
                base.build(m, "float16")
                count += 1
            if m > 1 and name == "W2":
                for cps in MMA_CPS:
                    _kernel(q, "float16", cps, m).build(m, "float16")
                    count += 1
        for cps in GEMV_CPS if sweep and "kind" not in METHODS[name] else ():
            for mr in GEMV_MAXREG:
                k_ = _bench_kernel(name, q, cps, 1)
                k_._maxreg = {1: mr} if mr else {}
                k_.build(1, "float16")
                count += 1
        print(f"built {n}x{k} {name} ({time.time() - t0:.0f} s)", flush=True)
    print(f"{count} kernel variants ready in {time.time() - t0:.0f} s")


# ---------------------------------------------------------------- GPU side

def run_checks(log):
    import torch

    worst, failures, total = {}, 0, 0
    for q, m, xdt, ydt, cps, seed in check_cases():
        rng = np.random.default_rng(seed + 1000)
        x = rng.standard_normal((m, q.k)).astype(np.float32)
        xt = torch.from_numpy(x).to("cuda", dtype=getattr(torch, xdt))
        ref = xt.double().cpu().numpy() @ q.dequantize().astype(np.float64).T
        f = _kernel(q, ydt, cps, m)
        for residual in (False, True) if ydt == "float32" else (False,):
            r = rng.standard_normal((m, q.n)).astype(np.float32) if residual else None
            y = f(xt, residual=None if r is None else torch.from_numpy(r).cuda()).double().cpu().numpy()
            want = ref if r is None else ref + r
            p = f.params(m, xdt, residual)
            err = float(np.abs(y - want).max() / max(np.abs(want).max(), 1e-30))
            tol = _tolerance(f, m, ydt, xdt)
            ok = bool(err <= tol) and y.shape == want.shape
            failures += not ok
            total += 1
            key = f"bits={q.config.bits}"
            worst[key] = max(worst.get(key, 0), err)
            log(f"{'ok  ' if ok else 'FAIL'} N={q.n:5d} K={q.k:5d} group={q.config.group_size} sym={q.zeros is None}{' real-z' if q.zeros is not None and np.any(q.zeros != np.round(q.zeros)) else ''} "
                f"bits={q.config.bits!s:7s} M={m:3d} x={xdt} y={ydt} kernel={p.kind} mt={p.mt} chunks/block={p.cps} split={p.split} "
                f"residual={residual} max|err|/max|ref|={err:.2e} (tol {tol:.0e})")
    log(f"{total - failures}/{total} checks passed; worst relative error per bits: "
        + ", ".join(f"{k}: {v:.1e}" for k, v in worst.items()))
    return failures


def _timer(fn_list, reps=40, batch=20):
    """Median CUDA-event time (µs) of fn_list[i % len](…); the GPU queue is pre-filled before each batch."""
    import torch

    for f in fn_list[:3]:
        f()
    torch.cuda.synchronize()
    times = []
    i = 0
    while len(times) < reps:
        ev = []
        torch.cuda._sleep(20_000_000)
        for _ in range(batch):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn_list[i % len(fn_list)]()
            e.record()
            ev.append((s, e))
            i += 1
        torch.cuda.synchronize()
        times += [s.elapsed_time(e) * 1e3 for s, e in ev]
    return statistics.median(times)


def _graphs(fs, x):
    import torch
    import tvm_ffi

    out = []
    for f in fs:
        f(x)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        ctx = torch.cuda.graph(g)
        with tvm_ffi.use_torch_stream(ctx):
            f(x)
        out.append(g.replay)
    return out


STREAM_CALLS = 96   # calls per CUDA graph in _stream_us


def _stream_us(fns, calls=STREAM_CALLS, reps=15):
    """Median µs per call of ``calls`` calls cycling through ``fns`` (weight copies: cold in L2) captured in one
    CUDA graph: every method's kernel time with no launch gaps between calls, as the matmuls of a decode step
    replayed from a graph. (``_timer`` times one call between events, a graph launch or a stream launch each.)"""
    import torch
    import tvm_ffi

    for f in fns[:3]:
        f()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with tvm_ffi.use_torch_stream(torch.cuda.graph(g)):
        for i in range(calls):
            fns[i % len(fns)]()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e3 / calls)
    del g
    return statistics.median(times)


def copies_for(nbytes, l2=50 << 20, floor=256 << 20):
    return max(3, -(-max(4 * l2, floor) // max(nbytes, 1)))


def hbm_bandwidth():
    import torch

    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    us = _timer([lambda: b.copy_(a)], reps=20, batch=5)
    return 2 * n / (us * 1e-6) / 1e9


def int4_peer(n, k, group=128):
    """torch's int4 weight-only matmul (``_weight_int4pack_mm``, bf16 activations), or None with the reason."""
    import torch

    try:
        codes = torch.randint(0, 16, (n, k), dtype=torch.int32, device="cuda")
        packed_u8 = ((codes[:, ::2] << 4) | codes[:, 1::2]).to(torch.uint8)
        w = torch._convert_weight_to_int4pack(packed_u8, 8)
        sz = torch.randn(k // group, n, 2, dtype=torch.bfloat16, device="cuda") * 0.01
        x = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
        torch._weight_int4pack_mm(x, w, group, sz)
        torch.cuda.synchronize()
        return (w, sz, group), None
    except Exception as e:  # noqa: BLE001 — report the peer as unavailable, with why
        return None, f"{type(e).__name__}: {e}"[:300]


def run_bench(log, bw, sweep=False):
    import torch
    import torch.nn.functional as F

    results = []
    for n, k in SHAPES:
        wq = {}
        for (nn, kk, name), q in bench_weights():
            if (nn, kk) == (n, k):
                wq[name] = q
        w16 = torch.randn(n, k, dtype=torch.float16, device="cuda") * 0.02
        fp16_copies = [w16] + [w16.clone() for _ in range(copies_for(w16.nbytes) - 1)]
        i4, i4_err = int4_peer(n, k)
        if i4 is not None:
            i4w = [i4[0]] + [i4[0].clone() for _ in range(copies_for(i4[0].nbytes + i4[1].nbytes) - 1)]
        lut = {}
        for name, q in wq.items():
            base = _bench_kernel(name, q)
            cp = copies_for(base.weight_bytes)
            lut[name] = [base] + [base.clone() for _ in range(cp - 1)]
        for m in MS:
            x16 = torch.randn(m, k, dtype=torch.float16, device="cuda")
            xbf = x16.to(torch.bfloat16)
            row = {"n": n, "k": k, "m": m}
            row["cublas_fp16_us"] = _timer([lambda w=w: F.linear(x16, w) for w in fp16_copies])
            row["cublas_fp16_stream_us"] = _stream_us([lambda w=w: F.linear(x16, w) for w in fp16_copies])
            row["cublas_fp16_bytes"] = w16.nbytes
            if i4 is not None:
                row["torch_int4_us"] = _timer([lambda w=w: torch._weight_int4pack_mm(xbf, w, i4[2], i4[1])
                                               for w in i4w])
                try:
                    row["torch_int4_stream_us"] = _stream_us([lambda w=w: torch._weight_int4pack_mm(xbf, w, i4[2], i4[1])
                                                              for w in i4w])
                except Exception as e:  # noqa: BLE001 — a peer that cannot be captured is reported, not fatal
                    row["torch_int4_stream_error"] = f"{type(e).__name__}: {e}"[:300]
                row["torch_int4_bytes"] = i4[0].nbytes + i4[1].nbytes
            else:
                row["torch_int4_error"] = i4_err
            for name, fs in lut.items():
                row[f"lutc_{name}_us"] = _timer([lambda f=f: f(x16) for f in fs])
                row[f"lutc_{name}_stream_us"] = _stream_us([lambda f=f: f(x16) for f in fs])
                row[f"lutc_{name}_pdl"] = fs[0].params(m).pdl
                if row[f"lutc_{name}_pdl"]:   # the same kernel launched after its predecessor
                    for f in fs:
                        f._pdl = ""
                    row[f"lutc_{name}_nopdl_stream_us"] = _stream_us([lambda f=f: f(x16) for f in fs])
                    for f in fs:
                        f._pdl = None
                row[f"lutc_{name}_bytes"] = fs[0].weight_bytes
                row[f"lutc_{name}_cps"] = fs[0].params(m).cps
                row[f"lutc_{name}_kernel"] = fs[0].plan(m)[0]
                if m > 1 and not fs[0].codes and fs[0].plan(m)[0] != "lut":   # the LUT kernel at this M
                    for f in fs:
                        f._kind = "lut"
                    row[f"lutc_{name}_lut_us"] = _timer([lambda f=f: f(x16) for f in fs])
                    for f in fs:
                        f._kind = None
                if fs[0].plan(m)[0] in ("gemm", "wgmma"):   # the other tensor-core kernels at this M
                    for kind in ("mma", "gemm") if fs[0].plan(m)[0] == "wgmma" else ("mma",):
                        for f in fs:
                            f._kind = kind
                        row[f"lutc_{name}_{kind}_us"] = _timer([lambda f=f: f(x16) for f in fs])
                    for f in fs:
                        f._kind = None
                if m >= 64 and fs[0].plan(m)[0] in ("mma", "gemm"):
                    other = _other_tile(fs[0], m)
                    for f in fs:
                        f._mma_tile = other
                    row[f"lutc_{name}_other_tile"] = other
                    row[f"lutc_{name}_other_tile_us"] = _timer([lambda f=f: f(x16) for f in fs])
                    for f in fs:
                        f._mma_tile = None
                if m > 1 and name == "W2":
                    mt = fs[0].plan(m)[1]
                    sweep_ = {}
                    for cps in MMA_CPS:
                        for f in fs:
                            f._cps = {mt: cps}
                        sweep_[str(cps)] = _timer([lambda f=f: f(x16) for f in fs])
                    for f in fs:
                        f._cps = {}
                    row[f"lutc_{name}_sweep_us"] = sweep_
                if m == 1 and sweep and "kind" not in METHODS[name]:  # sweep the K split of the GEMV
                    gemv = {}
                    for cps in GEMV_CPS:
                        for mr in GEMV_MAXREG:
                            if cps > fs[0].cw.chunks:
                                continue
                            for f in fs:
                                f._cps, f._maxreg = {1: cps}, ({1: mr} if mr else {})
                            gemv[f"{cps}" + (f"/r{mr}" if mr else "")] = _timer([lambda f=f: f(x16) for f in fs])
                    for f in fs:
                        f._cps, f._maxreg = {}, {}
                    row[f"lutc_{name}_sweep_us"] = gemv
                if m == 1:
                    try:  # the decode step as a CUDA graph (one graph per weight copy): no launch gaps
                        row[f"lutc_{name}_graph_us"] = _timer(_graphs(fs, x16))
                    except Exception as e:  # noqa: BLE001
                        row[f"lutc_{name}_graph_error"] = f"{type(e).__name__}: {e}"[:300]
            results.append(row)
            msg = (f"N={n} K={k} M={m}: in a {STREAM_CALLS}-call graph: cuBLAS {row['cublas_fp16_stream_us']:.2f}, "
                   f"torch int4 {row.get('torch_int4_stream_us', float('nan')):.2f}, "
                   + ", ".join(f"lutc {nm} {row[f'lutc_{nm}_stream_us']:.2f}" for nm in lut) + " us; per call: ")
            msg += f"cuBLAS {row['cublas_fp16_us']:.1f} us"
            if "torch_int4_us" in row:
                msg += f", torch int4 {row['torch_int4_us']:.1f} us"
            for name in lut:
                msg += f", lutc {name} {row[f'lutc_{name}_us']:.1f} us"
                if f"lutc_{name}_lut_us" in row:
                    msg += f" (LUT kernel {row[f'lutc_{name}_lut_us']:.1f})"
                if f"lutc_{name}_other_tile_us" in row:
                    msg += f" ({row[f'lutc_{name}_other_tile']}-row tile {row[f'lutc_{name}_other_tile_us']:.1f})"
                if f"lutc_{name}_sweep_us" in row:
                    msg += f" (sweep {', '.join(f'{c}:{t:.1f}' for c, t in row[f'lutc_{name}_sweep_us'].items())})"
                if m == 1:
                    msg += f" (graph {row.get(f'lutc_{name}_graph_us', float('nan')):.1f})"
            log(msg)
        del fp16_copies, lut
        torch.cuda.empty_cache()
    return results


def markdown(results, bw, device, check_summary):
    lines = [f"# CUDA LUT kernels vs cuBLAS fp16 and torch int4 ({device})", "",
             f"Measured device-to-device copy bandwidth: **{bw:.0f} GB/s** (read + write). "
             "CUDA-event medians, cold weights (each method rotates through > 200 MB of weight copies), "
             "activations float16, lutc output float16, group size 128 (W4/W2 asymmetric rtn, ternary absmean). "
             "lutc time = the whole call (fused table build + LUT matmul + split-K reduction when K is split). "
             "M = 1 runs the dp4a GEMV (W2, W4 and ternary as codes, activations rounded to int8 per 32 K; at N = 4096 "
             "blocks of 32 rows whose warps split K and add in shared memory, at 11008 and 14336 K split over "
             "128-row blocks, the last one summing the partials), with the "
             "same weights as bit planes on the LUT kernel (table lookups) beside it (`planes`); "
             "M = 4 and 16 the tensor-core kernel (mma.py: weights dequantized to "
             "float16 in registers, `mma.sync`), with the LUT kernel's time beside it (`LUT kernel`); M = 128 the "
             "Hopper prefill GEMM (wgmma.py: 128 activation rows (two warpgroups) x 128 weight rows per block, `cp.async` pipeline, "
             "weights dequantized into shared memory, `wgmma.mma_async`), with the tensor-core kernel it replaced "
             "(`mma.py`) and the `mma.sync` prefill GEMM (`gemm.py`, for float32 activations and sm_80) beside it. "
             "`best` = fastest of the default and a sweep over K split (chunks of 128 per block, over blocks; at M = 1 "
             "x register cap), "
             "`graph` = the default kernel replayed from a CUDA graph (no launch gaps), `%HBM` = weight bytes "
             "(planes + scales + zeros) / best time / copy bandwidth. Ratio columns use the best lutc time (cuBLAS and "
             "torch int4 are single kernels launched on the stream).", "", check_summary, "",
             "| N x K | M | cuBLAS fp16 µs | torch int4 µs | lutc W4 µs | W4 vs int4 | lutc W2 µs | W2 vs cuBLAS "
             "| W2 %HBM | lutc ternary µs | ternary vs cuBLAS |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        def t(name):
            us = r.get(f"lutc_{name}_us")
            sw = r.get(f"lutc_{name}_sweep_us")
            gr = r.get(f"lutc_{name}_graph_us")
            text = f"{us:.1f}"
            best = us
            if r.get(f"lutc_{name}_lut_us"):
                text += f" (LUT kernel {r[f'lutc_{name}_lut_us']:.1f})"
            if r.get(f"lutc_{name}-planes_us"):
                pl = r.get(f"lutc_{name}-planes_graph_us") or r[f"lutc_{name}-planes_us"]
                text += f" (planes {pl:.1f})"
            for kind in ("mma", "gemm"):
                if r.get(f"lutc_{name}_{kind}_us"):
                    text += f" ({kind}.py {r[f'lutc_{name}_{kind}_us']:.1f})"
            if r.get(f"lutc_{name}_other_tile_us"):
                text += f" ({r[f'lutc_{name}_other_tile']}-row tile {r[f'lutc_{name}_other_tile_us']:.1f})"
            if gr:
                text += f" (graph {gr:.1f})"
                best = min(best, gr)
            if sw:
                cfg, b = min(sw.items(), key=lambda kv: kv[1])
                if b < best:
                    text += f" (best {b:.1f} @{cfg})"
                    best = b
            return us, text, best
        c = r["cublas_fp16_us"]
        i4 = r.get("torch_int4_us")
        w4, w4s, w4b = t("W4")
        w2, w2s, w2b = t("W2")
        tr, trs, trb = t("ternary")
        hbm = r["lutc_W2_bytes"] / (w2b * 1e-6) / 1e9 / bw * 100
        lines.append(f"| {r['n']}x{r['k']} | {r['m']} | {c:.1f} | {'n/a' if i4 is None else f'{i4:.1f}'} | {w4s} | "
                     f"{'n/a' if i4 is None else f'{i4 / w4b:.2f}x'} | {w2s} | {c / w2b:.2f}x | {hbm:.0f}% | {trs} | "
                     f"{c / trb:.2f}x |")
    lines += ["", f"## In a graph of {STREAM_CALLS} calls (every method alike)", "",
              f"Each method's calls (cycling through its weight copies: cold in L2) captured in one CUDA graph and "
              f"replayed; µs = graph time / {STREAM_CALLS}: kernel time with no launch gaps, as the matmuls of a "
              "decode step replayed from a graph. The table above times one call between events instead (a stream "
              "launch for cuBLAS and torch int4, a stream or one-kernel graph launch for lutc), which adds each "
              "launch's latency. At M = 1 the dp4a GEMV is launched with programmatic dependent launch (sm_90: it "
              "loads its weights while its predecessor finishes, `wait`; for 4-bit codes it also lets its successor "
              "start at its entry, `trigger`); `no PDL` = the same kernel launched after its predecessor.", "",
              "| N x K | M | cuBLAS fp16 µs | torch int4 µs | lutc W4 µs | W4 vs int4 | lutc W2 µs | W2 vs cuBLAS "
              "| W2 %HBM | lutc ternary µs | ternary vs cuBLAS |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def nopdl(r, nm):
        v = r.get(f"lutc_{nm}_nopdl_stream_us")
        return f" (no PDL {v:.2f})" if v else ""
    for r in results:
        if "cublas_fp16_stream_us" not in r:
            continue
        c, i4 = r["cublas_fp16_stream_us"], r.get("torch_int4_stream_us")
        w4, w2, tr = (r[f"lutc_{nm}_stream_us"] for nm in ("W4", "W2", "ternary"))
        hbm = r["lutc_W2_bytes"] / (w2 * 1e-6) / 1e9 / bw * 100
        lines.append(f"| {r['n']}x{r['k']} | {r['m']} | {c:.2f} | {'n/a' if i4 is None else f'{i4:.2f}'} | "
                     f"{w4:.2f}{nopdl(r, 'W4')} | {'n/a' if i4 is None else f'{i4 / w4:.2f}x'} | "
                     f"{w2:.2f}{nopdl(r, 'W2')} | {c / w2:.2f}x | {hbm:.0f}% | {tr:.2f}{nopdl(r, 'ternary')} | "
                     f"{c / tr:.2f}x |")
    return "\n".join(lines) + "\n"


def gemv_sweep_cases():
    """(name, weight) of the M = 1 K-split sweep under CUDA graphs (``--gemv-sweep``): the dp4a GEMV's widths."""
    for (n, k, name), q in bench_weights():
        if name in ("W2", "W4"):
            yield n, k, name, q


def gemv_graph_sweep(log):
    """The dp4a GEMV's graph time per chunks-per-block (K split), M = 1, cold weights: what choose_cps should pick."""
    import torch

    out = []
    for n, k, name, q in gemv_sweep_cases():
        x16 = torch.randn(1, k, dtype=torch.float16, device="cuda")
        base = _bench_kernel(name, q)
        fs = [base] + [base.clone() for _ in range(copies_for(base.weight_bytes) - 1)]
        row = {"n": n, "k": k, "name": name, "default_cps": base.params(1).cps, "graph_us": {}}
        for cps in GEMV_CPS:
            for f in fs:
                f._cps = {1: cps}
            row["graph_us"][str(cps)] = _timer(_graphs(fs, x16))
        out.append(row)
        log(f"GEMV graph sweep N={n} K={k} {name} (default {row['default_cps']} chunks/block): "
            + ", ".join(f"{c}: {t:.2f} us" for c, t in row["graph_us"].items()))
    return out


def profile_target():
    """A few calls of the default W2 and W4 GEMV kernels at 14336 x 4096 (run under ncu)."""
    import torch

    x = torch.randn(1, 4096, dtype=torch.float16, device="cuda")
    for name in ("W2", "W4"):
        cfg = METHODS[name]
        f = _kernel(_quant(14336, 4096, cfg["group_size"], False, cfg["bits"], 1234), "float16", None)
        for _ in range(3):
            f(x)
    torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--no-bench", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="also sweep the GEMV's K split and register cap "
                    "(M = 1); pass it to --prepare as well")
    ap.add_argument("--gemv-sweep", action="store_true", help="only the dp4a GEMV's K-split sweep under CUDA "
                    "graphs (M = 1, W2/W4); pass it to --prepare as well")
    ap.add_argument("--profile", action="store_true", help="only run the 14336x4096 W2/W4 GEMV kernels (for ncu)")
    a = ap.parse_args(argv)
    if a.prepare and a.gemv_sweep:
        for n, k, name, q in gemv_sweep_cases():
            for cps in GEMV_CPS:
                _bench_kernel(name, q, cps, 1).build(1, "float16")
            print(f"built the GEMV sweep of {n}x{k} {name}", flush=True)
        return 0
    if a.prepare:
        prepare(a.sweep, bench=not a.no_bench)
        return 0
    if a.profile:
        profile_target()
        return 0
    if a.gemv_sweep:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        res = gemv_graph_sweep(print)
        (Path(a.out) / "gpu_gemv_sweep.json").write_text(json.dumps(res, indent=1))
        return 0
    import torch

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    logf = open(out / "gpu_check.log", "w")

    def log(s):
        print(s, flush=True)
        logf.write(s + "\n")
        logf.flush()

    device = torch.cuda.get_device_name()
    log(f"device: {device}, torch {torch.__version__}, python {platform.python_version()}")
    failures = run_checks(log)
    summary = [l for l in open(out / "gpu_check.log").read().splitlines() if "checks passed" in l][-1]
    if a.no_bench:
        return 1 if failures else 0
    bw = hbm_bandwidth()
    log(f"device-to-device copy: {bw:.0f} GB/s")
    results = run_bench(log, bw, a.sweep)
    (out / "gpu.json").write_text(json.dumps({"device": device, "copy_gbps": bw, "results": results}, indent=1))
    (out / "gpu.md").write_text(markdown(results, bw, device, "Correctness: " + summary))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
