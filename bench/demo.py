"""`make demo`: compile the built-in LLaMA-style model (random weights, fixed seed), show its IR, run it.

Until the cpu target lands this uses target="reference" (the numpy executor).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import lutc
from lutc.codegen.reference.executor import run as run_reference
from lutc.frontend.llama import LlamaSpec, build_llama, random_llama_weights


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--target", default="reference")
    ap.add_argument("--dump-ir", default="ir_dumps/demo")
    ap.add_argument("--tokens", type=int, default=8, help="tokens to generate greedily")
    args = ap.parse_args(argv)

    spec = LlamaSpec()
    graph = build_llama(spec, random_llama_weights(spec, seed=0))
    t0 = time.perf_counter()
    cm = lutc.compile(graph, target=args.target, dump_ir=args.dump_ir)
    print(f"compiled for {cm.target!r} in {time.perf_counter() - t0:.2f} s\n")
    print(cm.summary(), "\n")
    print(cm.timing.report(), "\n")

    prompt = np.random.default_rng(1).integers(0, spec.vocab_size, (1, 12))
    ids = prompt
    t0 = time.perf_counter()
    for _ in range(args.tokens):  # no KV cache yet: every step re-runs the whole prefix
        logits = cm(ids)
        ids = np.concatenate([ids, logits[:, -1:].argmax(-1)], axis=1)
    dt = time.perf_counter() - t0
    print(f"prompt    {prompt[0].tolist()}")
    print(f"generated {ids[0, prompt.shape[1]:].tolist()}  ({args.tokens / dt:.1f} tokens/s, no KV cache)")
    ref = run_reference(graph, [ids[:, :-1]], float_dtype=np.float64)[0]
    err = np.abs(cm(ids[:, :-1]) - ref).max() / np.abs(ref).max()
    print(f"max relative error of the logits against a float64 run of the imported graph: {err:.2e}\n")

    # the same model with its linear layers as LUT ops: 4-bit weights, groups of 64, int8 tables
    quant = lutc.QuantConfig(bits=4, group_size=64, method="clip")
    qm = lutc.compile(graph, target=args.target, quant=quant, dump_ir=args.dump_ir + "_w4")
    counts = {op.value: n for op, n in qm.graph.op_counts().items() if op.value.startswith("lut")}
    qlogits = qm(ids[:, :-1])
    rms = np.sqrt(((qlogits - ref) ** 2).mean() / (ref ** 2).mean())
    print(f"W4 g64 (clip, int8 tables): {counts}; logits relative RMS error vs float: {rms:.3f} "
          "(random weights: no structure to preserve)")
    print(f"IR dumps: {args.dump_ir}/ ({', '.join(sorted(p.name for p in Path(args.dump_ir).glob('*.txt')))})")


if __name__ == "__main__":
    main()
