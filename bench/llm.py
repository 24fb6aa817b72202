"""Whole-model CPU benchmark: SmolLM2-135M prefill and decode with lutc W2/W3/W4 artifacts against torch fp32
(transformers, eager) and onnxruntime fp32 / MatMulNBits int4 (made with onnxruntime's quantizer), side by
side in one process, interleaved in rounds, medians; peak RSS of each engine in its own process; lutc's
precompute fusion and table sharing on/off; a LLaMA-7B-shaped layer stack against its weight-bandwidth
roofline.

    python -m lutc.bench.llm [--bits 2,3,4] [--prompt 128] [--decode 32] [--rounds 5] [--stack-layers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lutc.runtime.isa import describe_host

THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
CACHE = Path(os.environ.get("LUTC_CACHE", Path.home() / ".cache" / "lutc")) / "bench"
PACKAGE = Path(__file__).resolve().parents[1]
COMPILER_DIRS = ("codegen", "frontend", "ir", "passes", "runtime", "sim")


def source_tag() -> str:
    """A hash of lutc's own sources (not its tests or benchmarks): cached artifacts built by an older
    compiler than the one checked out are rebuilt, not timed."""
    import hashlib

    h = hashlib.sha256()
    files = [*PACKAGE.glob("*.py"), *(f for d in COMPILER_DIRS for f in (PACKAGE / d).rglob("*"))]
    for f in sorted(files):
        if f.suffix in (".py", ".c", ".h"):
            h.update(str(f.relative_to(PACKAGE)).encode() + f.read_bytes())
    return h.hexdigest()[:12]


# -- engines: each has step(ids [1, n]) -> next token, and reset() -------------------------------------
class LutcEngine:
    replay = True

    def __init__(self, path):
        import lutc.runtime

        self.m = lutc.runtime.load(path, replay=self.replay)
        self.names = self.m.output_names
        self.specs = [s for s in self.m.program.inputs if s["name"].startswith("past_")]

    def reset(self):
        self.pasts = {s["name"]: np.zeros((1, s["shape"][1], 0, s["shape"][3]), np.float32) for s in self.specs}

    def step(self, ids):
        outs = self.m.run_dict({"input_ids": ids, **self.pasts})
        self.pasts = {n.replace("present_", "past_"): v for n, v in zip(self.names[1:], outs[1:])}
        return int(outs[0][0, -1].argmax())


class LutcEagerEngine(LutcEngine):
    """Every decode step run step by step (no bound plan: runtime/replay.py)."""
    replay = False


class OrtEngine:
    def __init__(self, path):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        self.s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.ins = self.s.get_inputs()[1:]
        self.outs = [o.name for o in self.s.get_outputs()]

    def reset(self):
        self.pasts = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in self.ins}

    def step(self, ids):
        outs = self.s.run(None, {"input_ids": ids, **self.pasts})
        self.pasts = {n.replace("present_", "past_"): v for n, v in zip(self.outs[1:], outs[1:])}
        return int(outs[0][0, -1].argmax())


class TorchEngine:
    def __init__(self, _path=None):
        import torch

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from models import load_smollm2

        torch.set_num_threads(THREADS)
        self.torch, self.model = torch, load_smollm2()

    def reset(self):
        from transformers import DynamicCache

        self.cache = DynamicCache()

    def step(self, ids):
        with self.torch.no_grad():
            out = self.model(self.torch.from_numpy(ids), past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return int(out.logits[0, -1].argmax())


# -- artifacts ---------------------------------------------------------------------------------------
def smollm2_graph_and_spec():
    import gguf

    from lutc.frontend.gguf import read_spec
    from lutc.frontend.llama import import_llama
    from lutc.runtime.cli import _smollm2_gguf

    path = _smollm2_gguf()
    return import_llama(path, keep_quantized=False), read_spec(gguf.GGUFReader(path))


def prepare(bits_list, variants=True) -> dict[str, tuple[type, Path]]:
    """Build (once, cached) every engine's model file; returns name -> (engine class, path)."""
    import lutc

    from .onnx_llama import export, quantize_int4

    CACHE.mkdir(parents=True, exist_ok=True)
    graph, spec = None, None
    engines: dict[str, tuple[type, Path]] = {"torch fp32": (TorchEngine, Path("-"))}
    onnx32, onnx4 = CACHE / f"smollm2_kv_{lutc.__version__}.onnx", CACHE / f"smollm2_kv_int4_{lutc.__version__}.onnx"
    # (name, bits, target options, lm_head left in float at this precision (None: quantized too, as ORT int4 does))
    configs = [(f"lutc W{b}", b, {}, None) for b in bits_list]
    if variants:
        configs += [("lutc W4 no norm fusion", 4, {"fuse_norm": False}, None),
                    ("lutc W4 no table sharing", 4, {"share_tables": False, "fuse_norm": False}, None)]
        configs += [(f"lutc W{bits_list[0]} float16 lm_head", bits_list[0], {}, "float16"),
                    (f"lutc W{bits_list[0]} float32 lm_head", bits_list[0], {}, "float32")]
    for name, b, opts, head in configs:
        tag = "_".join(f"{k}{int(v)}" for k, v in sorted(opts.items())) + (f"head_{head}" if head else "")
        path = CACHE / f"smollm2_w{b}_g64{tag}_{lutc.__version__}_{source_tag()}"
        if not (path / "manifest.json").exists():
            if graph is None:
                graph, spec = smollm2_graph_and_spec()
            q = lutc.QuantConfig(bits=b, group_size=64, method="rtn", exclude=() if head is None else None,
                                 float_dtype=head or "float16")
            print(f"compiling {name} ...", flush=True)
            lutc.compile(graph, target="cpu", quant=q, target_options=opts).save(path)
        engines[name] = (LutcEngine, path)
        if variants and name == configs[0][0]:
            engines[f"{name} eager steps"] = (LutcEagerEngine, path)
    if not onnx4.exists():
        if graph is None:
            graph, spec = smollm2_graph_and_spec()
        export(spec, graph.weights, onnx32)
        quantize_int4(onnx32, onnx4)
    engines["onnxruntime fp32"] = (OrtEngine, onnx32)
    engines["onnxruntime int4"] = (OrtEngine, onnx4)
    return engines


# -- measurement -------------------------------------------------------------------------------------
def run_once(engine, prompt: np.ndarray, decode: int) -> tuple[float, float, list[int]]:
    engine.reset()
    t0 = time.perf_counter()
    tok = engine.step(prompt)
    t1 = time.perf_counter()
    toks = [tok]
    for _ in range(decode):
        toks.append(engine.step(np.asarray([[tok]], np.int64)))
        tok = toks[-1]
    return t1 - t0, time.perf_counter() - t1, toks


def peak_rss(name: str, cls: type, path: Path, prompt_len: int) -> float:
    """MiB: VmHWM of a fresh process that loads the engine, prefills and decodes 16 tokens."""
    code = (f"import numpy as np; from lutc.bench.llm import {cls.__name__} as E, run_once\n"
            f"e = E({str(path)!r}); run_once(e, np.arange(1, {prompt_len + 1})[None] % 1000, 16)\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if r.returncode:
        print(f"peak RSS of {name} failed: {r.stderr[-500:]}", file=sys.stderr)
        return float("nan")
    return int(r.stdout.split()[-1]) / 1024


def measure(engines, args) -> list[dict]:
    rng = np.random.default_rng(0)
    prompt = rng.integers(100, 40000, (1, args.prompt)).astype(np.int64)
    live = {name: cls(path) for name, (cls, path) in engines.items()}
    samples = {name: ([], []) for name in live}
    tokens = {}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, e in live.items():
            time.sleep(args.settle)
            p, d, toks = run_once(e, prompt, args.decode)
            if r:
                samples[name][0].append(p)
                samples[name][1].append(d)
            tokens[name] = toks
        print(f"round {r}: " + ", ".join(f"{n} {args.decode / samples[n][1][-1]:.1f} tok/s" for n in live if r),
              flush=True)
    rows = []
    for name, (p, d) in samples.items():
        rows.append({"engine": name, "prefill_tok_s": args.prompt / statistics.median(p),
                     "decode_tok_s": args.decode / statistics.median(d),
                     "decode_spread": [args.decode / max(d), args.decode / min(d)],
                     "rss_mib": peak_rss(name, *engines[name], args.prompt) if args.rss else float("nan"),
                     "first_tokens": tokens[name][:8]})
    return rows


def next_pasts(names: list, outs: list) -> dict:
    """A decode step's presents as the next step's pasts (as generation feeds them back)."""
    return {n.replace("present_", "past_"): v for n, v in zip(names, outs) if n.startswith("present_")}


# the stack's first steps per round, untimed: the copy of the given cache, the first step of its shapes (eager),
# the step that binds the replay (runtime/replay.py)
UNTIMED_STEPS = 3


def stack_bench(layers: int, bits_list, args) -> list[dict]:
    """A LLaMA-7B-shaped decoder stack (hidden 4096, intermediate 11008, 32 heads / 8 KV heads): decode time
    per token against the time to read its packed weights once at the measured read bandwidth."""
    import lutc
    from lutc.frontend.llama import LlamaSpec, build_llama, random_llama_weights
    from lutc.runtime.cpu import interpreter

    from .kernels import CacheEvictor, read_bandwidth, read_library, wake_up

    spec = LlamaSpec(vocab_size=256, hidden_size=4096, intermediate_size=11008, num_layers=layers, num_heads=32,
                     num_kv_heads=8, max_positions=512)
    graph = build_llama(spec, random_llama_weights(spec, seed=0), kv_cache=True, last_logits=True)
    bw = read_bandwidth(THREADS)
    read = read_library()   # the read floor (None without gcc)
    evict = CacheEvictor(THREADS)   # 2 layers' weights fit this host's L3 (480 MiB): a 32-layer model's do not
    rows = []
    for b in bits_list:
        cm = lutc.compile(graph, target="cpu", quant=lutc.QuantConfig(bits=b, group_size=128, exclude=()))
        ex = cm.executable
        lut_arrays = [ex.weights[k] for spec_ in ex.program.luts.values() for k in spec_["weights"]]
        lut_bytes = sum(a.nbytes for a in lut_arrays)
        names = list(graph.output_names)
        start = {s["name"]: np.random.default_rng(1).standard_normal((1, 8, 127, 128)).astype(np.float32)
                 for s in ex.program.inputs if s["name"].startswith("past_")}
        runs = {"replayed": ex.interpreter, "eager": interpreter(ex.program, ex.weights, ex.libraries, replay=False)}
        times = {mode: [] for mode in (*runs, "read")}
        for r in range(args.rounds + 1):   # steps back to back, as in generation: after an idle pause these
            if read and r:                  # VMs run slow for a while (a paused step measured 45% of the
                time.sleep(args.settle)     # roofline where back-to-back steps reach 56%)
                wake_up()
                for i in range(5):          # the read floor: the same weight arrays only read, as cold
                    evict()
                    t = time.perf_counter()
                    for a in lut_arrays:
                        read(a, THREADS)
                    times["read"].append(time.perf_counter() - t)
            for mode, run in runs.items():
                time.sleep(args.settle)
                wake_up()
                pasts = dict(start)
                for i in range(UNTIMED_STEPS + 5):   # each step's presents are the next step's pasts (the KV
                    evict()                          # cache grows in place)
                    t = time.perf_counter()
                    outs = run({"input_ids": np.asarray([[7]]), **pasts})
                    if r and i >= UNTIMED_STEPS:
                        times[mode].append(time.perf_counter() - t)
                    pasts = next_pasts(names, outs)
        breakdown = {mode: profiled_steps(run, mode == "replayed", start, names, evict, args)
                     for mode, run in runs.items()}
        bw = max(bw, read_bandwidth(THREADS))   # re-probed after each width: the best seen (one probe read 18.1
        floor = lut_bytes / (bw * 1e9)           # GB/s where the stack ran at 20.8, "115% of the roofline")
        t, eager = (statistics.median(times[mode]) for mode in runs)
        read_s = statistics.median(times["read"]) if times["read"] else float("nan")
        rows.append({"bits": b, "layers": layers, "ms": t * 1e3, "eager_ms": eager * 1e3,
                     "weight_mib": lut_bytes / 2 ** 20, "roofline_ms": floor * 1e3, "pct_roofline": 100 * floor / t,
                     "bandwidth_gbs": bw, "read_ms": read_s * 1e3, "pct_read": 100 * read_s / t,
                     "profile": breakdown})
        print(f"7B-shaped stack W{b}: {t * 1e3:.2f} ms/token (eager steps {eager * 1e3:.2f}), roofline "
              f"{floor * 1e3:.2f} ms ({100 * floor / t:.0f}%), read floor {read_s * 1e3:.2f} ms "
              f"({100 * read_s / t:.0f}%)", flush=True)
    return rows


# -- report ------------------------------------------------------------------------------------------
def profiled_steps(interp, replayed: bool, start: dict, names: list, evict, args) -> dict:
    """Where a decode step's time goes (runtime/profile.py), over 5 steps after the untimed ones, each after the
    same eviction: LUT matmuls (ms, weight GB/s), the attention blocks, the other steps, and the time between
    steps; ``replayed``: the replay's bound calls, else every step eagerly."""
    from lutc.runtime.profile import Profile

    from .kernels import wake_up

    prof = Profile(replayed=replayed)
    time.sleep(args.settle)
    wake_up()
    pasts = dict(start)
    for i in range(UNTIMED_STEPS + 5):
        evict()
        interp.profile = prof if i >= UNTIMED_STEPS else None
        outs = interp({"input_ids": np.asarray([[7]]), **pasts})
        pasts = next_pasts(names, outs)
    interp.profile = None
    ph = prof.report()["decode (replayed)" if replayed else "decode"]
    lut = [r for r in ph["rows"] if r["step"].startswith("lut ")]
    lut_ms = sum(r["ms_per_call"] for r in lut)
    lut_bytes = sum(r["gb_per_s"] * r["ms_per_call"] * 1e-3 for r in lut)  # GB per call
    attn = sum(r["ms_per_call"] for r in ph["rows"] if r["step"] == "rope_kv_attention")
    return {"step_ms": ph["ms_per_call"], "lut_ms": lut_ms, "lut_gbs": lut_bytes / (lut_ms * 1e-3),
            "attention_ms": attn, "other_ms": ph["steps_ms_per_call"] - lut_ms - attn,
            "between_ms": ph["ms_per_call"] - ph["steps_ms_per_call"], "rows": ph["rows"]}


def report(rows, stack, args) -> str:
    base = {r["engine"]: r for r in rows}
    t32, o4 = base.get("torch fp32"), base.get("onnxruntime int4")
    lines = [f"# SmolLM2-135M on the CPU ({THREADS} threads), prompt {args.prompt} tokens, {args.decode} decode "
             f"tokens, median of {args.rounds} interleaved rounds", "", f"Host: {describe_host()}.", "",
             "| engine | prefill tok/s | decode tok/s | decode min..max | vs torch fp32 | vs ORT int4 | peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lo, hi = r["decode_spread"]
        vs = [f"{r['decode_tok_s'] / x['decode_tok_s']:.2f}x" if x else "-" for x in (t32, o4)]
        lines.append(f"| {r['engine']} | {r['prefill_tok_s']:.1f} | {r['decode_tok_s']:.1f} | {lo:.1f}..{hi:.1f} | "
                     f"{vs[0]} | {vs[1]} | {r['rss_mib']:.0f} |")
    lines += ["", "lutc: artifacts loaded by the thin runtime; RTN, groups of 64, lm_head quantized too (as onnxruntime's "
              "MatMulNBits quantizer does; SmolLM2's tied embedding stays float for the lookup). 'no norm fusion': "
              "RMSNorm runs as its own step before the LUT call; 'no table sharing': q/k/v and gate/up each build "
              "their own tables in their own call (and the norm cannot fuse); 'eager steps': the same artifact with "
              "every decode step run step by step instead of replayed from a bound plan (runtime/replay.py); 'float16 / "
              "float32 lm_head': the lm_head left in float (`lutc compile --bits` without `--quantize-head`), at "
              "float16 (the default: stored and read as float16 on the CPU) or float32 (`float_dtype=\"float32\"`).", ""]
    if stack:
        lines += [f"## LLaMA-7B-shaped decoder stack ({stack[0]['layers']} layers, random weights, KV cache of 127)", "",
                  "Roofline: packed LUT weight bytes / the best streaming read measured in this run up to that row "
                  "(bench/kernels.py's probe, re-probed after each width: " +
                  ", ".join(f"W{s['bits']} {s['bandwidth_gbs']:.1f} GB/s" for s in stack) + "). ms/token: median of decode steps run back to back "
                  f"(5 per round after a pause and {UNTIMED_STEPS} untimed steps: the cache copied in, the first "
                  "step eager, the replay bound), replayed from a bound plan, and 'eager steps' step by step "
                  "(interleaved rounds), each step's presents fed back as the next one's pasts as in generation "
                  "(130 to 134 cached positions); before each step other weights "
                  "(twice the last-level cache) stream through LUT GEMVs, as the other layers of a 32-layer model "
                  "would: the step's weights come from DRAM. Read floor: the same LUT weight arrays only read (the "
                  "probe's loop, one OpenMP call per array, after the same eviction), median over the rounds: what "
                  "the step's reads allow where the probe's 512 MiB stream overstates a cold read of a few MiB.", "",
                  "| bits | ms/token | eager steps ms/token | packed weights MiB | roofline ms | % of roofline "
                  "| read floor ms | % of floor |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| W{s['bits']} | {s['ms']:.2f} | {s.get('eager_ms', float('nan')):.2f} | {s['weight_mib']:.1f} | "
                  f"{s['roofline_ms']:.2f} | {s['pct_roofline']:.0f}% | {s.get('read_ms', float('nan')):.2f} | "
                  f"{s.get('pct_read', float('nan')):.0f}% |" for s in stack]
        prof = [s for s in stack if s.get("profile")]
        if prof:
            lines += ["", "Where a step's time goes (`runtime/profile.py`, 5 profiled steps after the untimed ones, each "
                      "after the same eviction; ms per step; replayed: the bound calls of the replay, eager: every "
                      "step): the LUT matmuls with the weight bytes they read per second, the attention blocks "
                      "(RoPE, cache append, attention), the other steps (embedding gather, RoPE table slices), and the "
                      "time between steps (input checks and copies, buffers, the interpreter).", "",
                      "| bits | mode | profiled step ms | LUT matmuls ms (GB/s) | attention ms | other steps ms | "
                      "between steps ms |", "|---:|---|---:|---:|---:|---:|---:|"]
            lines += [f"| W{s['bits']} | {mode} | {p['step_ms']:.2f} | {p['lut_ms']:.2f} ({p['lut_gbs']:.1f}) | "
                      f"{p['attention_ms']:.2f} | {p['other_ms']:.2f} | {p['between_ms']:.2f} |"
                      for s in stack for mode, p in s["profile"].items()]
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["engine"] for r in rows]
    for ax, key, title in zip(axes, ("decode_tok_s", "prefill_tok_s"), ("decode tokens/s", "prefill tokens/s")):
        ax.barh(names, [r[key] for r in rows], color=["C0" if n.startswith("lutc") else "C7" for n in names])
        ax.set_title(f"SmolLM2-135M, {title}")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--settle", type=float, default=0.5)
    ap.add_argument("--no-rss", dest="rss", action="store_false")
    ap.add_argument("--no-variants", dest="variants", action="store_false")
    ap.add_argument("--stack-layers", type=int, default=2, help="0 skips the 7B-shaped stack")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--name", default="llm", help="result files NAME.md, NAME.json, NAME.png")
    args = ap.parse_args(argv)
    bits = [int(b) for b in args.bits.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = measure(prepare(bits, args.variants), args)
    stack = stack_bench(args.stack_layers, bits, args) if args.stack_layers else []
    (out / f"{args.name}.json").write_text(json.dumps({"rows": rows, "stack": stack, "threads": THREADS}, indent=1))
    text = report(rows, stack, args)
    (out / f"{args.name}.md").write_text(text)
    plot(rows, out / f"{args.name}.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
