"""`make demo`: compile SmolLM2-135M for the CPU with 4-bit LUT matmuls, save it as a standalone artifact, load
it with the thin runtime, answer a prompt, and print tokens/s next to torch's (transformers, fp32, eager).

Before that, the built-in LLaMA-style model (random weights) goes through the same steps in a few seconds, with
its IR dumped per pass. ``--quick`` stops there (no SmolLM2).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import lutc
from lutc.frontend.llama import LlamaSpec, build_llama, random_llama_weights


def builtin(dump_ir: str) -> None:
    spec = LlamaSpec()
    graph = build_llama(spec, random_llama_weights(spec, seed=0), kv_cache=True)
    quant = lutc.QuantConfig(bits=4, group_size=64, method="clip")
    t0 = time.perf_counter()
    cm = lutc.compile(graph, target="cpu", quant=quant, dump_ir=dump_ir)
    print(f"built-in model: compiled for 'cpu' in {time.perf_counter() - t0:.1f} s; IR dumps in {dump_ir}/")
    print(cm.summary())
    ref = lutc.compile(graph, target="reference", quant=quant)
    prompt = np.random.default_rng(1).integers(0, spec.vocab_size, (1, 12))
    pasts = {n: np.zeros((1, spec.num_kv_heads, 0, spec.head_dim), np.float32) for n in graph.inputs[1:]}
    a, b = cm.run(input_ids=prompt, **pasts)[0], ref.run(input_ids=prompt, **pasts)[0]
    from lutc.runtime.isa import int8_kernels

    # from 9 rows the host's int8 kernel (AMX, or VNNI at W3/W4) quantizes activations where the reference builds
    # int8 tables: two int8 approximations of the same matmul, not the same numbers
    how = f"{int8_kernels()[0]} kernel's int8 activations" if int8_kernels() else "same int8 tables"
    print(f"cpu kernels vs the numpy reference ({prompt.shape[1]}-token prompt, {how} vs int8 tables): max relative "
          f"difference {np.abs(a - b).max() / np.abs(b).max():.1e}\n")


def smollm2(out: str, prompt: str, tokens: int, bits: int) -> None:
    from lutc.runtime.cli import _source

    t0 = time.perf_counter()
    graph, tok, gen = _source("smollm2", quantize=True)
    quant = lutc.QuantConfig(bits=bits, group_size=64, method="clip")
    cm = lutc.compile(graph, target="cpu", quant=quant, progress=True, target_options={"progress": True})
    cm.save(out, tokenizer=tok, generation=gen)
    print(f"SmolLM2-135M W{bits} (groups of 64, clipped RTN, int8 tables): compiled and saved to {out}/ "
          f"in {time.perf_counter() - t0:.0f} s")

    rt = lutc.runtime.load(out)  # what `lutc run` does: the thin runtime, no compiler involved
    text = gen["chat_prefix"] + prompt + gen["chat_suffix"]
    ids = tok.encode(text, add_special_tokens=False)
    print(f"\nprompt: {prompt}\nlutc:   ", end="", flush=True)
    shown = []

    def stream(t):
        shown.append(t)
        if t != gen["eos_token_id"]:
            print(tok.decode([t]), end="", flush=True)

    rt.generate(ids, tokens, eos_token_id=gen["eos_token_id"], on_token=stream)
    print()

    # speed, measured the way bench/llm.py does it (warm engines, a fixed prompt, greedy decode of 32 tokens)
    from lutc.bench.llm import LutcEngine, TorchEngine, run_once

    x = np.asarray([ids], np.int64)
    rows = []
    for name, engine in (("lutc W%d" % bits, LutcEngine(out)), ("torch fp32", TorchEngine())):
        run_once(engine, x, 4)
        p, d = min((run_once(engine, x, 32)[:2] for _ in range(2)), key=lambda pd: pd[1])
        rows.append((name, x.shape[1] / p, 32 / d))
    print("\n" + "\n".join(f"{n:>12}: prefill {pf:6.1f} tokens/s, decode {dc:5.1f} tokens/s" for n, pf, dc in rows))
    print(f"{'':>12}  decode speed-up over torch: {rows[0][2] / rows[1][2]:.1f}x "
          "(bench/llm.py compares more engines: python -m lutc.bench.llm)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dump-ir", default="ir_dumps/demo")
    ap.add_argument("--out", default="demo_out/smollm2_w4")
    ap.add_argument("--prompt", default="What is the capital of France?")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="only the built-in model")
    args = ap.parse_args(argv)
    builtin(args.dump_ir)
    if not args.quick:
        smollm2(args.out, args.prompt, args.tokens, args.bits)


if __name__ == "__main__":
    main()
