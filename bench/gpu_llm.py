"""Whole models on ``target="cuda"``: correctness against the reference executor, then decode speed against
torch fp16 eager (HF transformers), in one run on the GPU machine.

    python -m lutc.bench.gpu_llm --prepare      # build machine (TVM + nvcc, no GPU): compile every model once,
                                                # so each kernel library is in $LUTC_CACHE
    python -m lutc.bench.gpu_llm --out DIR      # GPU machine (torch, tvm_ffi, the TVM runtime libraries, the
                                                # cache): compiles again from the cache, checks, times

Models have random weights, generated the same way on both machines (the speed of a decode step does not
depend on the values): a small LLaMA for the checks, SmolLM2-135M's shape, and two layers of a 7B shape.
Checks: logits of a 13-token prompt then 6 cached decode steps against the float64-exact reference
executor's full-sequence logits (float tables: the GPU kernels compute the dequantized matmul to float32
rounding), greedy tokens equal, and the saved artifact loaded by the thin runtime in a fresh process giving
the same logits. Timings: greedy decoding of 32 tokens after a 128-token prompt (one host round trip per
token, as in real generation), 3 interleaved rounds, medians.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..frontend.llama import LlamaSpec, build_llama, random_llama_weights

CHECK = LlamaSpec(vocab_size=300, hidden_size=192, intermediate_size=500, num_layers=3, num_heads=6,
                  num_kv_heads=2, max_positions=128)
SMOLLM2 = LlamaSpec(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
                    num_kv_heads=3, max_positions=2048, rope_theta=100000.0, rms_norm_eps=1e-5)
STACK_7B = LlamaSpec(vocab_size=1024, hidden_size=4096, intermediate_size=11008, num_layers=2, num_heads=32,
                     num_kv_heads=8, max_positions=256, tie_word_embeddings=False)
CHECK_QUANTS = {"W2 g64 asym": dict(bits=2, group_size=64), "W4 g32 sym": dict(bits=4, group_size=32, symmetric=True),
                "ternary g64": dict(bits="ternary", group_size=64),
                "W2 g64 asym int8": dict(bits=2, group_size=64, table_dtype="int8"),
                "W4 g64 asym int8": dict(bits=4, group_size=64, table_dtype="int8")}
# float tables: the LUT kernels for every row count, the dequantized matmul to float32 rounding; int8 tables
# (the default): prefill on the tensor cores (weights and activations rounded to float16: ~1e-3), decode on the
# dp4a GEMV (activations rounded to int8 per 32 K: ~0.5% rms per matmul). The int8 bound is the int8 table mode's
# numerics: the CPU target's int8 tables give 5.9e-2 (W2 g64 asym) and 2.6e-2 (W4 g64 asym) on CHECK (measured;
# ``--prepare`` prints them again: cpu_int8_errors)
CHECK_BOUND = {"f32": 1e-4, "int8": 6e-2}
SPEED_QUANTS = {"W2": dict(bits=2, group_size=128), "W4": dict(bits=4, group_size=128),
                "W2-f32tables": dict(bits=2, group_size=128, table_dtype="f32")}   # prefill on the LUT kernel


def _compile(spec: LlamaSpec, quant: dict, table_dtype: str = "int8", target: str = "cuda", **options):
    import lutc

    g = build_llama(spec, random_llama_weights(spec, seed=0), kv_cache=True, last_logits=True)
    return lutc.compile(g, target=target, quant=lutc.QuantConfig(**{"table_dtype": table_dtype, **quant},
                                                                 exclude=[]), target_options=options or None)


NO_PDL = ("W2",)   # also timed without programmatic dependent launch (CudaOptions.pdl=False), graphs on


ATTENTION_CASES = [   # (params, batch, query rows s, span L, filled n_valid, capacity)
    (dict(heads=9, kv_heads=3, head_dim=64, causal=True, align="bottom_right"), 1, 1, 300, 300, 320),
    (dict(heads=9, kv_heads=3, head_dim=64, causal=True, align="bottom_right"), 2, 1, 256, 131, 256),
    (dict(heads=9, kv_heads=3, head_dim=64, causal=True, align="bottom_right"), 1, 13, 13, 13, 64),
    (dict(heads=9, kv_heads=3, head_dim=64, causal=True, align="bottom_right"), 1, 5, 133, 133, 140),
    (dict(heads=4, kv_heads=4, head_dim=80, causal=True, align="top_left"), 1, 7, 7, 7, 7),
    (dict(heads=8, kv_heads=2, head_dim=128, causal=False, align="top_left"), 1, 3, 200, 150, 210),
    (dict(heads=2, kv_heads=1, head_dim=256, causal=True, align="bottom_right"), 1, 1, 129, 1, 129),
]


def _attention_ops() -> dict:
    from lutc.codegen.cuda.ops import op_name

    ops = {}
    for p, *_ in ATTENTION_CASES:
        p = dict(p, scale=p["head_dim"] ** -0.5)
        ops[op_name("attention", p)] = ("attention", p)
    for threads in (128, 256):   # block sizes compared by gpu_profile --attention (default: 512)
        p = dict(ATTENTION_CASES[0][0], scale=0.125, threads=threads)
        ops[op_name("attention", p)] = ("attention", p)
    return ops


DECODE_STEPS = [(0, 13)] + [(t, t + 1) for t in range(13, 19)]   # token spans: a 13-token prefill, 6 decode steps


def _max_logit_error(run, names, full, ids) -> float:
    """Max over a 13-token prefill and 6 decode steps of max |logit - reference| / max |reference|."""
    worst, pasts = 0.0, _pasts(CHECK)
    for lo, hi in DECODE_STEPS:
        outs = run({"input_ids": ids[:, lo:hi], **pasts})
        got = np.asarray(outs[0][0, -1].float().cpu().numpy() if hasattr(outs[0], "cpu") else outs[0][0, -1])
        want = full[0, hi - 1]
        worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
        pasts = {n.replace("present_", "past_"): v for n, v in zip(names, outs) if n.startswith("present_")}
    return worst


def cpu_int8_errors() -> dict:
    """The int8 table mode's logit error on CHECK through the CPU target (the scale of CHECK_BOUND["int8"])."""
    import lutc

    ids = np.random.default_rng(1).integers(0, CHECK.vocab_size, (1, 19))
    out = {}
    for name, q in CHECK_QUANTS.items():
        if q.get("table_dtype") != "int8":
            continue
        g = build_llama(CHECK, random_llama_weights(CHECK, seed=0))
        full = lutc.compile(g, target="reference", quant=lutc.QuantConfig(**{**q, "table_dtype": "f32"},
                                                                         exclude=[]))(ids)
        cm = _compile(CHECK, q, target="cpu")
        out[name] = _max_logit_error(cm.executable, list(cm.graph.output_names), full, ids)
    return out


def prepare() -> None:
    from lutc.codegen.cuda.build import build_ops_library

    for name, err in cpu_int8_errors().items():
        print(f"CPU int8 tables, {name}: max rel logit error {err:.2e} (CHECK_BOUND int8 {CHECK_BOUND['int8']:.0e})")

    print("attention kernels", build_ops_library(_attention_ops(), "sm_90a"), flush=True)
    for name, q in CHECK_QUANTS.items():
        print("check model", name, flush=True)
        _compile(CHECK, q, "f32")   # "f32" unless the case names its table dtype
    for spec, label in ((SMOLLM2, "SmolLM2 shape"), (STACK_7B, "7B-shaped stack")):
        for name, q in SPEED_QUANTS.items():
            print(label, name, flush=True)
            _compile(spec, q)
            if name in NO_PDL:
                _compile(spec, q, pdl=False)


# ---- checks ----

def _attention_reference(q, k, v, p, L, nv):
    """float64 numpy: softmax over the keys each query row may see (a prefix of the cache)."""
    b, hq, s, d = q.shape
    rep = hq // p["kv_heads"]
    out = np.zeros(q.shape)
    for n in range(b):
        for h in range(hq):
            for i in range(s):
                bound = (i + nv - s + 1 if p["align"] == "bottom_right" else i + 1) if p["causal"] else nv
                kmax = max(0, min(nv, bound, L))
                sc = k[n, h // rep, :kmax] @ q[n, h, i] * p["head_dim"] ** -0.5
                w = np.exp(sc - sc.max())
                out[n, h, i] = w @ v[n, h // rep, :kmax] / w.sum()
    return out


def check_attention(log) -> bool:
    """The attention kernel on awkward shapes, unfilled cache positions holding NaN, vs float64 numpy."""
    import torch

    from lutc.codegen.cuda.build import build_ops_library
    from lutc.runtime.cuda_libs import load_module

    ops = _attention_ops()
    mod = load_module(str(build_ops_library(ops, "sm_90a")))
    names = {json.dumps(p, sort_keys=True): name for name, (_, p) in ops.items()}
    rng = np.random.default_rng(5)
    ok = True
    for p, b, s, L, nv, cap in ATTENTION_CASES:
        p = dict(p, scale=p["head_dim"] ** -0.5)
        fn = mod[names[json.dumps(p, sort_keys=True)]]
        q = rng.standard_normal((b, p["heads"], s, p["head_dim"])).astype(np.float32)
        k = rng.standard_normal((b, p["kv_heads"], cap, p["head_dim"])).astype(np.float32)
        v = rng.standard_normal(k.shape).astype(np.float32)
        k[:, :, nv:], v[:, :, nv:] = np.nan, np.nan    # never read
        dev = [torch.from_numpy(a).cuda() for a in (q, k, v)]
        y = torch.empty_like(dev[0])
        fn(*dev, L, torch.tensor([nv], dtype=torch.int64, device="cuda"), y)
        want = _attention_reference(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), p, L, nv)
        err = float(np.abs(y.cpu().numpy() - want).max() / np.abs(want).max())
        passed = err < 1e-5
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'} attention heads {p['heads']}/{p['kv_heads']} d {p['head_dim']} "
              f"{'causal ' + p['align'] if p['causal'] else 'full'}: batch {b}, {s} queries, span {L}, {nv} filled of "
              f"{cap}: max rel error {err:.1e} (bound 1e-5)", file=log, flush=True)
    return ok


def _pasts(spec: LlamaSpec) -> dict:
    return {f"past_{kv}.{i}": np.zeros((1, spec.num_kv_heads, 0, spec.head_dim), np.float32)
            for i in range(spec.num_layers) for kv in "kv"}


def check(log) -> bool:
    import tempfile

    import lutc
    from lutc.runtime.cuda import interpreter

    tmp = Path(tempfile.mkdtemp(prefix="lutc_gpu_llm_"))
    ok = True
    rng = np.random.default_rng(1)
    ids = rng.integers(0, CHECK.vocab_size, (1, 19))
    for name, q in CHECK_QUANTS.items():
        cm = _compile(CHECK, q, "f32")
        bound = CHECK_BOUND[q.get("table_dtype", "f32")]
        g = build_llama(CHECK, random_llama_weights(CHECK, seed=0))
        ref = lutc.compile(g, target="reference", quant=lutc.QuantConfig(**{**q, "table_dtype": "f32"},
                                                                        exclude=[]))
        full = ref(ids)
        names = list(cm.graph.output_names)
        ex = cm.executable
        eager = interpreter(ex.program, ex.weights, ex.libraries, graphs=False)
        worst, gap = 0.0, 0.0
        pasts, eager_pasts = _pasts(CHECK), _pasts(CHECK)
        for lo, hi in DECODE_STEPS:
            outs = ex({"input_ids": ids[:, lo:hi], **pasts})   # decode steps from CUDA graphs after the first
            got = outs[0][0, -1].float().cpu().numpy()
            want = full[0, hi - 1]
            worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
            pasts = {n.replace("present_", "past_"): v for n, v in zip(names, outs) if n.startswith("present_")}
            e_outs = eager({"input_ids": ids[:, lo:hi], **eager_pasts})
            gap = max(gap, float((e_outs[0][0, -1] - outs[0][0, -1]).abs().max()))
            eager_pasts = {n.replace("present_", "past_"): v for n, v in zip(names, e_outs) if n.startswith("present_")}
        graphs = ex.interpreter.graphs
        replayed = graphs.replays > 0 and graphs.blocker is None
        tokens = cm.generate(ids[0, :5], max_new_tokens=8).tokens
        ref_tokens = ref.generate(ids[0, :5], max_new_tokens=8).tokens
        art = cm.save(tmp / f"check_{name.split()[0]}")
        fresh = _fresh_process_logits(art, ids[:, :13])
        first = cm.executable({"input_ids": ids[:, :13], **_pasts(CHECK)})[0][0, -1].float().cpu().numpy()
        same = bool(np.array_equal(fresh, first))
        passed = worst < bound and tokens == ref_tokens and same and replayed
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'} {name}: max rel logit error over prefill + 6 decode steps "
              f"{worst:.2e} (bound {bound:.0e}); CUDA graphs: {graphs.replays} decode steps replayed "
              f"({graphs.blocker or 'no blocker'}), max |graph - eager| logit {gap:.1e}; greedy tokens "
              f"{'equal' if tokens == ref_tokens else 'DIFFER'} {tokens}; artifact in a fresh process: "
              f"{'identical' if same else 'DIFFERENT'} logits", file=log, flush=True)
    return ok


_FRESH = """
import sys, numpy as np, lutc.runtime as r
m = r.load(sys.argv[1])
ids = np.load(sys.argv[2])
pasts = {s["name"]: np.zeros([1 if d == "batch" else 0 if d == "past" else d for d in s["shape"]], np.float32)
         for s in m.program.inputs if s["name"] != "input_ids"}
y = m.run_dict({"input_ids": ids, **pasts})[0][0, -1].float().cpu().numpy()
bad = [k for k in sys.modules if k == "tvm" or k.startswith(("lutc.passes", "lutc.frontend", "lutc.codegen", "lutc.ir"))]
assert not bad, bad
np.save(sys.argv[3], y)
"""


def _fresh_process_logits(art: Path, ids: np.ndarray) -> np.ndarray:
    np.save(art.parent / "ids.npy", ids)
    subprocess.run([sys.executable, "-c", _FRESH, str(art), str(art.parent / "ids.npy"), str(art.parent / "y.npy")],
                   check=True)
    return np.load(art.parent / "y.npy")


# ---- timings ----

def _hf_model(spec: LlamaSpec):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
                      intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
                      num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
                      max_position_embeddings=spec.max_positions, rope_theta=spec.rope_theta,
                      rms_norm_eps=spec.rms_norm_eps, tie_word_embeddings=spec.tie_word_embeddings)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(torch.float16).cuda().eval()


def _torch_decode(model, prompt, new: int) -> tuple[float, float, float]:
    """Decode tokens/s (over all steps, and of the median step) and prefill tokens/s of HF eager fp16 with its
    KV cache (one host round trip per token)."""
    import torch

    with torch.no_grad():
        ids = torch.tensor([prompt], device="cuda")
        t0 = time.perf_counter()
        out = model(ids, use_cache=True)
        tok = int(out.logits[0, -1].argmax())
        prefill = len(prompt) / (time.perf_counter() - t0)
        steps = []
        for _ in range(new - 1):
            t0 = time.perf_counter()
            out = model(torch.tensor([[tok]], device="cuda"), past_key_values=out.past_key_values, use_cache=True)
            tok = int(out.logits[0, -1].argmax())
            steps.append(time.perf_counter() - t0)
        return (new - 1) / sum(steps), 1 / statistics.median(steps), prefill


def _rates(gen) -> tuple[float, float, float]:
    return gen.decode_tokens_per_s, gen.steady_tokens_per_s, gen.prefill_tokens_per_s


def _copy_bandwidth() -> float:
    import torch

    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    best = 0.0
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        best = max(best, 2 * a.numel() / (s.elapsed_time(e) / 1e3))
    return best


MODELS = {"smollm2": (SMOLLM2, "SmolLM2-135M shape"), "7b": (STACK_7B, "7B-shaped 2-layer stack")}


def timings(models=tuple(MODELS), rounds: int = 3, prompt_len: int = 128, new: int = 32) -> dict:
    import torch

    from lutc.runtime.cuda import interpreter
    from lutc.runtime.generate import generate

    bw = _copy_bandwidth()
    res = {"device": torch.cuda.get_device_name(), "copy_GBps": bw / 1e9, "models": {}}
    rng = np.random.default_rng(2)
    for spec, label in (MODELS[m] for m in models):
        prompt = rng.integers(0, spec.vocab_size, prompt_len).tolist()
        engines = {"torch fp16 eager": (lambda m=_hf_model(spec): _torch_decode(m, prompt, new))}
        packed = {}
        for name, q in SPEED_QUANTS.items():
            cm = _compile(spec, q)
            ex = cm.executable
            packed[name] = sum(a.nbytes for k, a in ex.weights.items() if ".cuda." in k)
            engines[f"lutc {name}"] = (lambda cm=cm: _rates(cm.generate(prompt, max_new_tokens=new)))
            if name in NO_PDL:
                engines[f"lutc {name} no PDL"] = (lambda cm=_compile(spec, q, pdl=False): _rates(
                    cm.generate(prompt, max_new_tokens=new)))
            eager = interpreter(ex.program, ex.weights, ex.libraries, graphs=False)
            engines[f"lutc {name} no graphs"] = (lambda f=eager, p=ex.program, o=list(cm.graph.output_names): _rates(
                generate(f, p.inputs, o, prompt, new, p.meta.get("max_positions"))))
        runs: dict[str, list] = {n: [] for n in engines}
        for _ in range(rounds + 1):   # the first round warms up (kernel loads, allocator)
            for n, f in engines.items():
                runs[n].append(f())
        rows = {n: statistics.median(r[0] for r in v[1:]) for n, v in runs.items()}
        steady = {n: statistics.median(r[1] for r in v[1:]) for n, v in runs.items()}
        prefill = {n: statistics.median(r[2] for r in v[1:]) for n, v in runs.items()}
        res["models"][label] = {"tok_s": rows, "steady_tok_s": steady, "prefill_tok_s": prefill, "runs": runs,
                                "packed_bytes": packed,
                                "roofline_tok_s": {n: bw / b for n, b in packed.items()}}
        torch.cuda.empty_cache()
    return res


def _fmt(v: float, spec: str, unit: str = "") -> str:
    return "n/a" if v != v else format(v, spec) + unit


def markdown(res: dict) -> str:
    lines = [f"Device: {res['device']}; device-to-device copy {res['copy_GBps']:.0f} GB/s.", ""]
    for label, m in res["models"].items():
        base = m["tok_s"]["torch fp16 eager"]
        steady = m.get("steady_tok_s", {})
        sbase = steady.get("torch fp16 eager", float("nan"))
        prefill = m.get("prefill_tok_s", {})
        pbase = prefill.get("torch fp16 eager", float("nan"))
        lines += [f"**{label}** (decode tokens/s over 32 tokens after a 128-token prompt, and of the median "
                  "step (steady: without a graph's capture and first calls); medians of 3)", "",
                  "| engine | decode tok/s | vs torch fp16 | steady tok/s | vs torch fp16 | LUT weights MiB | "
                  "weight-read roofline tok/s | % of roofline (steady) | prefill tok/s (128 tokens) | vs torch fp16 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n, v in m["tok_s"].items():
            q = n.split()[1] if n.startswith("lutc") else ""
            st = steady.get(n, float("nan"))
            pf = prefill.get(n, float("nan"))
            tail = f" {_fmt(pf, '.0f')} | {_fmt(pf / pbase, '.2f', 'x')} |"
            row = f"| {n} | {v:.1f} | {v / base:.2f}x | {_fmt(st, '.1f')} | {_fmt(st / sbase, '.2f', 'x')} |"
            if q in m["packed_bytes"]:
                mib, roof = m["packed_bytes"][q] / 2**20, m["roofline_tok_s"][q]
                lines.append(f"{row} {mib:.1f} | {roof:.0f} | {_fmt(100 * st / roof, '.1f', '%')} |{tail}")
            else:
                lines.append(f"{row} | | |{tail}")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true", help="build every library into $LUTC_CACHE (no GPU needed)")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--skip-timings", action="store_true")
    ap.add_argument("--skip-checks", action="store_true")
    ap.add_argument("--models", default=",".join(MODELS), help=f"models to time, of {sorted(MODELS)}")
    args = ap.parse_args(argv)
    if args.prepare:
        prepare()
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    ok = True
    with open(args.out / "gpu_llm_check.log", "w") as log:
        try:
            ok = args.skip_checks or (check_attention(log) & check(log))
        except Exception:   # still time the models: a failed check is reported, not hidden
            import traceback

            traceback.print_exc(file=log)
            ok = False
    print((args.out / "gpu_llm_check.log").read_text())
    if not args.skip_timings:
        res = timings(args.models.split(","))
        (args.out / "gpu_llm.json").write_text(json.dumps(res, indent=1))
        (args.out / "gpu_llm.md").write_text(markdown(res))
        print(markdown(res))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
