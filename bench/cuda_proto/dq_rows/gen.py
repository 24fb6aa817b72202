"""The dp4a GEMV with K split inside the block (what codegen/cuda/dq.py ships as ``slices`` since 2026-12-03)
against the grid split, as CUDA sources for harness.cu: ``rows_{n}_{bits}_t{chunks per thread}_r1.cu`` and
``ship_{n}_{bits}.cu``. (The prototype also had blocks of 32 r rows, r = 2 and 4: slower everywhere, see README.)"""
import dataclasses
import os
import subprocess
import sys

import numpy as np

import lutc
from lutc.codegen.cuda.build import cuda_source

SHAPES = [(4096, 2, 2), (4096, 4, 1), (11008, 2, 4), (11008, 4, 2), (14336, 2, 4), (14336, 4, 2)]


def run(out: str, i: int, what: str) -> None:
    n, bits, cpt = SHAPES[i]
    rng = np.random.default_rng(0)
    q = lutc.quantize_weight(rng.standard_normal((n, 4096)).astype(np.float32), lutc.QuantConfig(bits=bits, group_size=128))
    p = lutc.kernels.build_lut_matmul(q, target="cuda", out_dtype="float32").params(1)
    if what == "rows":
        p, name = dataclasses.replace(p, slices=p.chunks // cpt, cps=p.chunks), f"rows_{n}_{bits}_t{cpt}_r1.cu"
    else:
        p, name = dataclasses.replace(p, slices=0, cps=2 if n == 4096 else 4), f"ship_{n}_{bits}.cu"
    open(os.path.join(out, name), "w").write(cuda_source(p))
    print(name, "slices", p.slices, "split", p.split, flush=True)


if __name__ == "__main__":   # one TVMScript parse per process: a second one found the first one's parser
    out = sys.argv[1]
    if len(sys.argv) == 2:
        for i in range(len(SHAPES)):
            for what in ("rows", "ship"):
                subprocess.run([sys.executable, __file__, out, str(i), what], check=True)
    else:
        run(out, int(sys.argv[2]), sys.argv[3])
