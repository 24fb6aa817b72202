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


def attention_scaling() -> None:
    """Device time of the attention kernel alone (SmolLM2's heads), decode (s = 1) and prefill, over L."""
    import torch
    import tvm_ffi

    from lutc.codegen.cuda.attention import THREADS
    from lutc.codegen.cuda.build import build_ops_library
    from lutc.runtime.cuda_libs import load_module

    from .gpu_llm import _attention_ops

    ops = _attention_ops()
    mod = load_module(str(build_ops_library(ops, "sm_90a")))
    cap = 2048
    k = torch.randn(1, 3, cap, 64, device="cuda")
    v = torch.randn_like(k)
    for name, (_, p) in ops.items():
        if p["heads"] != 9:
            continue
        fn = mod[name]
        for s, lengths in ((1, (1, 64, 128, 256, 512, 1024, 2048)), (128, (128,))):
            q = torch.randn(1, 9, s, 64, device="cuda")
            y = torch.empty_like(q)
            for L in lengths:
                nv = torch.tensor([L], dtype=torch.int64, device="cuda")
                g = torch.cuda.CUDAGraph()   # 20 calls in a graph: device time without the host's launch gaps
                with tvm_ffi.use_torch_stream(torch.cuda.graph(g)):
                    for _ in range(20):
                        fn(q, k, v, L, nv, y)
                times = []
                for _ in range(10):
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    g.replay()
                    b.record()
                    b.synchronize()
                    times.append(a.elapsed_time(b) * 1e3 / 20)
                print(f"attention 9/3 heads d 64, {p.get('threads', THREADS)} threads, {s} queries, L {L}: "
                      f"{statistics.median(times):.1f} us", flush=True)


def main(argv=None) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from lutc.runtime.cuda import interpreter

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", choices=sorted(MODELS))
    ap.add_argument("--quant", default="W2", choices=sorted(SPEED_QUANTS))
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--attention", action="store_true", help="only time the attention kernel over cache lengths")
    args = ap.parse_args(argv)
    if args.attention:
        attention_scaling()
        return 0
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
