"""The ``lutc`` command. Compiler pieces are imported inside the subcommands that need them."""
from __future__ import annotations

import argparse
import sys


def _load_graph(model: str):
    from ..frontend import import_model
    from ..frontend.llama import LlamaSpec, build_llama, random_llama_weights

    if model == "demo":
        spec = LlamaSpec()
        return build_llama(spec, random_llama_weights(spec, seed=0))
    return import_model(model)


def cmd_inspect(args) -> int:
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


def cmd_sim_dse(args) -> int:
    from ..bench.lutsim_dse import main as dse

    return dse((["--out", args.out] if args.out else []) + (["--no-plots"] if args.no_plots else []))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="lutc", description="lutc: low-bit LLM graphs to LUT kernels")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("inspect", help="import a model and print its IR summary and op statistics")
    p.add_argument("model", help="an .onnx file, or 'demo' for the built-in LLaMA-style model")
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
    except (ValueError, NotImplementedError, FileNotFoundError) as e:
        print(f"lutc {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
