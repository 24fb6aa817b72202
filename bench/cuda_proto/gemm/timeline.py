"""Per-block timeline of the Hopper GEMM at one K split (M = 128, W2): where a block's ~10 µs of fixed cost goes.

Needs a stamped kernel: ``git apply bench/cuda_proto/gemm/timeline_stamps.patch`` (refreshed for the staged epilogue;
run 10's half2-epilogue variant is ``timeline_stamps_half2_epilogue.patch`` in commit 8922a4b) writes
``%globaltimer`` into the unused partial-sum buffer (P[0, i, 2 bx], split 1 only) at: the block's start, the first
producer's first ``full`` arrive, the first consumer passing its first ``full`` wait, the consumers' loop end and
after the epilogue. Not for main: the outputs stay right, but P is scribbled on. Then

    python bench/cuda_proto/gemm/timeline.py --prepare      # here (LUTC_CACHE = the carried cache)
    python bench/cuda_proto/gemm/timeline.py OUT.json       # on the GPU machine

prints the relative error against float64 and per stamp the min / median / max over blocks, in µs after the
first block's start, then the median time of a call (``_timer``, warm weights: for comparing builds with each other;
run 10's files, the README's, timed one call at a time between events instead, host launch latency included).
"""
import json
import sys
from pathlib import Path
import numpy as np
import torch
sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402
out = {}
for n, k in ((14336, 4096), (14336, 1024), (4096, 4096), (4096, 1024)):
    q = run._quant(n, k, 128, False, 2, 1234)
    f = run.kernel(q, "wgmma", 128, 1, 128, producers=2)
    if sys.argv[1:] == ["--prepare"]:
        print(f.build(128))
        continue
    x = torch.randn(128, k, dtype=torch.float16, device="cuda")
    y = f(x).double().cpu().numpy()
    ref = x.double().cpu().numpy() @ q.dequantize().astype(np.float64).T
    print(n, k, "rel err", np.abs(y - ref).max() / np.abs(ref).max())
    rows = []
    part = next(iter(f._work.values()))[1]   # the partial-sum buffer the stamps go to
    nb = f.cw.n_pad // 128
    for _ in range(5):
        f(x)
        torch.cuda.synchronize()
        st = part[0, :5, :2 * nb].contiguous().view(torch.int64)[:, :nb].cpu().numpy().astype(np.float64)
        t0 = st[0].min()
        rel = (st - t0) / 1000.0   # us
        rows.append({name: [float(np.min(rel[i])), float(np.median(rel[i])), float(np.max(rel[i]))]
                     for i, name in enumerate(["start", "producer_first_arrive", "consumer_first_full",
                                               "loop_end", "epilogue_end"])})
    # warm weights: for comparing builds with each other, not with cuBLAS
    rows.append({"call_us_median": float(run._timer([lambda: f(x)]))})
    out[f"{n}x{k}"] = rows
    print(n, k, json.dumps(rows[-2:]))
if len(sys.argv) > 1 and sys.argv[1] != "--prepare":
    Path(sys.argv[1]).write_text(json.dumps(out, indent=1))
