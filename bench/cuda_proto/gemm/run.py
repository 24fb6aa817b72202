"""The prefill GEMM (codegen/cuda/gemm.py) against the tensor-core kernel it replaces (mma.py) and cuBLAS fp16, at
M = 64 / 128 / 256: correctness on awkward shapes, then CUDA-event and in-graph times over cold weight copies.

    python bench/cuda_proto/gemm/run.py --prepare      # here: build every library (TVM + nvcc) into $LUTC_CACHE
    python bench/cuda_proto/gemm/run.py --out DIR      # on the GPU machine (LUTC_CACHE = the carried cache)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lutc.bench.gpu import _quant, _stream_us, _timer, copies_for

SHAPES = [(4096, 4096), (11008, 4096), (14336, 4096)]
MS = [128]
BITS = [2, 4]
# (kind, tile, split override: None = the default rule, "x2" / "half" of the default's splits, or a number of
#  splits; pipeline stages (0: default), maxreg, producer warpgroups (wgmma.py: 0 = every warpgroup copies,
#  dequantizes and multiplies), stream-K blocks (wgmma.py: None = the rule, 0 = off, else that many, at most one
#  per chunk))
VARIANTS = [("wgmma", 128, None, 0, 0, 2, 0), ("wgmma", 128, None, 0, 0, 2, 132), ("wgmma", 128, None, 0, 0, 2, 128),
            ("wgmma", 128, 2, 0, 0, 2, 0)]


KINDS = None   # --kinds: only these kernel kinds (checks and timings)
STREAM_CHECKS = False   # --stream-checks: only the checks that force the stream-K split on or off


def variants(m, n, bits):
    return [v for v in VARIANTS if KINDS is None or v[0] in KINDS] if m == 128 else []


# correctness: (n, k, group, symmetric, m, x dtype, residual)
CHECKS = [(300, 1000, 128, False, 70, "float16", False), (130, 264, 32, True, 129, "float16", True),
          (1000, 2048, 256, False, 200, "float32", False), (257, 4104, None, False, 64, "float16", False),
          (200, 520, 64, False, 150, "float32", True)]


def kernel(q, kind, tile, split, m, ydt="float16", x_dtype="float16", stages=0, maxreg=0, producers=None,
           stream=None):
    import dataclasses

    from lutc.codegen.cuda.kernel import CudaLutMatmul

    f = CudaLutMatmul(q, out_dtype=ydt, arch="sm_90a", kind=kind)
    if stages or maxreg or producers is not None:
        params = f.params

        def replaced(*a, **kw):
            p = params(*a, **kw)
            return dataclasses.replace(p, stages=stages, maxreg=maxreg,
                                       producers=p.producers if producers is None else producers)
        f.params = replaced
    if tile:
        f._mma_tile = tile
    if stream is not None:
        p = f.params(m, x_dtype)
        f._stream = {p.mt: min(stream, p.chunks * p.n_pad // 128)}
    if split:
        p = f.params(m, x_dtype)
        target = {"x2": p.split * 2, "half": max(1, p.split // 2)}.get(split, split)
        f._cps = {p.mt: -(-p.chunks // target)}
    return f


def cases():
    for n, k in SHAPES:
        for bits in BITS:
            q = _quant(n, k, 128, False, bits, 1234)
            yield n, k, bits, q


def check_cases():
    seed = 10
    for n, k, group, sym, m, xdt, res in CHECKS:
        for bits in (1, 2, 4, "ternary"):
            seed += 1
            yield _quant(n, k, group, sym, bits, seed), m, xdt, res, seed


def check_out(res, seed):
    """The checks' output dtype: float32 with a residual, else float16 and float32 in turn (an output rounded to
    float16 stays within the 2e-3 of max |y| the checks allow: 2^-11 of a value)."""
    return "float32" if res or seed % 2 else "float16"


def check_kinds(xdt):
    """(kind, tile, producers, stages (0: default), stream-K blocks (None: the rule)) checked for activations of
    ``xdt``."""
    kinds = ((("gemm", None, 0, 0, None), ("wgmma", 64, 0, 0, None), ("wgmma", 128, 0, 0, None),
              ("wgmma", 64, 1, 0, None), ("wgmma", 128, 1, 0, None), ("wgmma", 128, 2, 0, 0), ("wgmma", 128, 2, 6, 0),
              ("wgmma", 128, 1, 6, 0), ("wgmma", 128, 2, 0, 132), ("wgmma", 128, 2, 0, 5), ("wgmma", 128, 1, 6, 7))
             if xdt == "float16" else (("gemm", None, 0, 0, None),))
    return [k for k in kinds if (KINDS is None or k[0] in KINDS) and (not STREAM_CHECKS or k[4] is not None)]


def prepare(part=0, parts=1):
    """Build every library (``part`` of ``parts``: run several at once on a machine with more cores)."""
    i = 0
    for q, m, xdt, res, seed in check_cases():
        for kind, tile, pw, ns, sk in check_kinds(xdt):
            if i % parts == part:
                kernel(q, kind, tile, None, m, check_out(res, seed), xdt, stages=ns, producers=pw,
                       stream=sk).build(m, xdt, res)
            i += 1
    for n, k, bits, q in cases():
        for m in MS:
            for kind, tile, split, ns, mr, pw, sk in variants(m, n, bits):
                if i % parts == part:
                    f = kernel(q, kind, tile, split, m, stages=ns, maxreg=mr, producers=pw, stream=sk)
                    print(n, k, bits, m, kind, f.params(m).mt, f.params(m).split, f.build(m), flush=True)
                i += 1


def run(out: Path):
    import torch
    import torch.nn.functional as F

    log = []

    def say(s):
        print(s, flush=True)
        log.append(s)

    fails = 0
    for q, m, xdt, res, seed in check_cases():
        g = torch.Generator(device="cuda").manual_seed(seed)
        x = torch.randn(m, q.k, dtype=getattr(torch, xdt), device="cuda", generator=g)
        r = torch.randn(m, q.n, dtype=torch.float32, device="cuda", generator=g) if res else None
        ref = x.half().double().cpu().numpy() @ q.dequantize().astype(np.float64).T
        if res:
            ref = ref + r.double().cpu().numpy()
        ydt = check_out(res, seed)
        for kind, tile, pw, ns, sk in check_kinds(xdt):
            f = kernel(q, kind, tile, None, m, ydt, xdt, stages=ns, producers=pw, stream=sk)
            p = f.params(m, xdt, res)
            y = f(x, residual=r).double().cpu().numpy()
            err = np.abs(y - ref).max() / np.abs(ref).max()
            ok = err <= 2e-3 and p.kind == kind
            fails += not ok
            say(f"{'ok  ' if ok else 'FAIL'} n={q.n} k={q.k} bits={q.config.bits} group={q.group_size} m={m} "
                f"x={xdt} y={ydt} residual={res} kind={p.kind} mt={p.mt} producers={p.producers} stages={ns or 'default'} "
                f"split={p.split} stream={p.stream}: rel err {err:.2e}")
    say(f"{fails} failures")
    rows = []
    for n, k, bits, q in cases():
        w16 = torch.randn(n, k, dtype=torch.float16, device="cuda") * 0.02
        ws = [w16] + [w16.clone() for _ in range(copies_for(w16.nbytes) - 1)]
        for m in MS:
            if not variants(m, n, bits):
                continue
            x = torch.randn(m, k, dtype=torch.float16, device="cuda")
            row = {"n": n, "k": k, "bits": bits, "m": m}
            row["cublas_graph_us"] = _stream_us([lambda w=w: F.linear(x, w) for w in ws])
            row["cublas_us"] = _timer([lambda w=w: F.linear(x, w) for w in ws])
            for kind, tile, split, ns, mr, pw, sk in variants(m, n, bits):
                f = kernel(q, kind, tile, split, m, stages=ns, maxreg=mr, producers=pw, stream=sk)
                fs = [f] + [f.clone() for _ in range(copies_for(f.weight_bytes) - 1)]
                p = f.params(m)
                name = (f"{kind}{p.mt}/s{p.split}" + (f"/ns{ns}" if ns else "") + (f"/r{mr}" if mr else "")
                        + (f"/p{pw}" if pw else "") + (f"/sk{p.stream}" if p.stream else ""))
                row[name + " graph"] = _stream_us([lambda f=f: f(x) for f in fs])
                row[name] = _timer([lambda f=f: f(x) for f in fs])
                del fs
            rows.append(row)
            say(json.dumps(row))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gemm_proto.json").write_text(json.dumps(rows, indent=1))
    (out / "gemm_proto.log").write_text("\n".join(log) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--part", default="0/1", help="i/n: build the i-th of n shares of the libraries")
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--kinds", default=None, help="comma-separated kernel kinds (default: all)")
    ap.add_argument("--shapes", default=None, help="NxK,NxK,... instead of SHAPES")
    ap.add_argument("--variants", default=None,
                    help="kind:tile:split:stages:maxreg:producers:stream,... instead of VARIANTS (empty field: "
                         "None)")
    ap.add_argument("--no-checks", action="store_true", help="time only")
    ap.add_argument("--stream-checks", action="store_true", help="only the checks that force stream-K on or off")
    a = ap.parse_args()
    global KINDS, SHAPES, VARIANTS, CHECKS, STREAM_CHECKS
    KINDS = a.kinds.split(",") if a.kinds else None
    STREAM_CHECKS = a.stream_checks
    if a.shapes:
        SHAPES = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    if a.variants:
        VARIANTS = [_variant(v) for v in a.variants.split(",")]
    if a.no_checks:
        CHECKS = []
    prepare(*map(int, a.part.split("/"))) if a.prepare else run(a.out)


def _variant(text):
    kind, tile, split, ns, mr, pw, sk = (text.split(":") + [""])[:7]
    num = lambda v: int(v) if v.isdigit() else (v or None)   # noqa: E731
    return kind, num(tile), num(split), int(ns or 0), int(mr or 0), int(pw or 0), num(sk)


if __name__ == "__main__":
    main()
