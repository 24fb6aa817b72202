"""Where a decode step's time goes on the GPU: per-kernel device time (torch profiler, CUDA activity) of one
eager decode step, the replay time of its CUDA graph, and the host time of a whole interpreter call.

    python -m lutc.bench.gpu_profile [--model smollm2|7b] [--bits 2]     # GPU machine, after gpu_llm --prepare
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict

import numpy as np

from .gpu_llm import MODELS, SPEED_QUANTS, _compile


def _median_ms(fn, n: int = 30) -> float:
    import torch

    out = []
    for _ in range(n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def main(argv=None) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from lutc.runtime.cuda import interpreter

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", choices=sorted(MODELS))
    ap.add_argument("--quant", default="W2", choices=sorted(SPEED_QUANTS))
    ap.add_argument("--prompt", type=int, default=128)
    args = ap.parse_args(argv)
    spec, label = MODELS[args.model]
    cm = _compile(spec, SPEED_QUANTS[args.quant])
    ex = cm.executable
    names = list(cm.graph.output_names)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, spec.vocab_size, (1, args.prompt))

    def step_inputs(outs, token):
        pasts = {n.replace("present_", "past_"): v for n, v in zip(names, outs) if n.startswith("present_")}
        return {"input_ids": np.asarray([[token]], np.int64), **pasts}

    for graphs in (False, True):
        run = interpreter(ex.program, ex.weights, ex.libraries, graphs=graphs)
        pasts = {s["name"]: np.zeros([1 if d == "batch" else 0 if d == "past" else d for d in s["shape"]], np.float32)
                 for s in ex.program.inputs if s["name"] != "input_ids"}
        outs = run({"input_ids": ids, **pasts})
        for _ in range(3):   # eager first step, then (with graphs) capture
            outs = run(step_inputs(outs, 1))
        state = {"outs": outs}

        def one():
            state["outs"] = run(step_inputs(state["outs"], 1))
        print(f"{label} {args.quant} {'graphs' if graphs else 'eager'}: interpreter call {_median_ms(one):.2f} ms",
              flush=True)
        if graphs:
            g = run.graphs.current[1].graph
            print(f"  graph replay alone {_median_ms(g.replay):.2f} ms; captures {run.graphs.captures}, "
                  f"replays {run.graphs.replays}, blocker {run.graphs.blocker}", flush=True)
        else:
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                one()
                torch.cuda.synchronize()
            per = defaultdict(lambda: [0, 0.0])
            for e in prof.events():
                if e.device_type.name == "CUDA":
                    k = e.name.split("(")[0][:60]
                    per[k][0] += 1
                    per[k][1] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
            total = sum(v[1] for v in per.values())
            print(f"  kernels of one eager step: {sum(v[0] for v in per.values())} launches, {total / 1e3:.2f} ms device time")
            for k, (n, t) in sorted(per.items(), key=lambda kv: -kv[1][1])[:15]:
                print(f"  {t / 1e3:8.3f} ms {n:5d}x  {k}")
        del run
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
