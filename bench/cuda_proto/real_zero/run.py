"""The speed cost of real-valued zero points (GGUF Q4_1 / k-quant mins): the same shapes with integer and with
real-valued zero points (codegen/cuda/layout.py: int8 z_i' + float16 fraction rows after the scales), every CUDA
kernel kind the planner picks (M = 1 dp4a GEMV, 16 mma.py, 128 wgmma.py), in 96-call graphs, cold weights.

    python bench/cuda_proto/real_zero/run.py --prepare     # here: build the libraries into $LUTC_CACHE
    python bench/cuda_proto/real_zero/run.py --out DIR     # on the GPU machine: DIR/real_zero.json, .md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lutc.bench.gpu import _quant, _stream_us, copies_for

SHAPES = [(4096, 4096), (14336, 4096)]
MS = [1, 16, 128]
WEIGHTS = [(4, 32), (4, 128), (2, 128)]     # (bits, group size)


def cases():
    for n, k in SHAPES:
        for bits, group in WEIGHTS:
            yield n, k, bits, group, {zp: _quant(n, k, group, "real" if zp == "real" else False, bits, 7)
                                      for zp in ("integer", "real")}


def kernel(q):
    from lutc.codegen.cuda.kernel import CudaLutMatmul

    return CudaLutMatmul(q, out_dtype="float16", arch="sm_90a")


def prepare():
    for n, k, bits, group, qs in cases():
        for zp, q in qs.items():
            f = kernel(q)
            assert f.cw.real_zero == (zp == "real"), zp
            for m in MS:
                print(n, k, bits, group, zp, m, f.params(m).kind, f.build(m), flush=True)


def run(out: Path):
    import torch

    rows = []
    for n, k, bits, group, qs in cases():
        for m in MS:
            x = torch.randn(m, k, dtype=torch.float16, device="cuda")
            row = {"n": n, "k": k, "bits": bits, "group": group, "m": m}
            for zp, q in qs.items():
                f = kernel(q)
                fs = [f] + [f.clone() for _ in range(copies_for(f.weight_bytes) - 1)]
                row["kind"] = f.params(m).kind
                row[f"{zp}_us"] = _stream_us([lambda f=f: f(x) for f in fs])
                row[f"{zp}_bytes"] = f.weight_bytes
                ref = x.double().cpu().numpy() @ q.dequantize().astype(np.float64).T
                y = f(x).double().cpu().numpy()
                row[f"{zp}_err"] = float(np.abs(y - ref).max() / np.abs(ref).max())
                del fs
            rows.append(row)
            print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_zero.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))
    md = [f"# Real-valued vs integer zero points, CUDA kernels ({torch.cuda.get_device_name()})", "",
          "µs per call in 96-call CUDA graphs (cold weights), float16 activations and output; bytes = weights + "
          "scales (+ fraction rows) + zero points; err = max |y - ref| / max |ref| vs float64.", "",
          "| N x K | bits | group | M | kernel | integer µs | real µs | real / integer | bytes ratio | "
          "err integer | err real |", "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['n']}x{r['k']} | {r['bits']} | {r['group']} | {r['m']} | {r['kind']} | "
                  f"{r['integer_us']:.2f} | {r['real_us']:.2f} | {r['real_us'] / r['integer_us']:.3f} | "
                  f"{r['real_bytes'] / r['integer_bytes']:.3f} | {r['integer_err']:.1e} | {r['real_err']:.1e} |")
    (out / "real_zero.md").write_text("\n".join(md) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("."))
    a = ap.parse_args()
    prepare() if a.prepare else run(a.out)


if __name__ == "__main__":
    main()
