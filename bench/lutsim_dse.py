"""Design-space exploration of the lmma LUT tensor core, from the cost and area models (nothing hard-coded).

    python -m lutc.bench.lutsim_dse [--out bench/results]     (or: lutc sim-dse)

1. LUT arrays with M*N*K = 512 (K = 1, 2, 4, 8; all power-of-two M, N) for A fp16/int8 x W1/W2/W4:
   area, power, compute density, energy efficiency, table reuse; the dequantize+MAC array alongside.
2. LLaMA-2-7B layer GEMMs (decode M = 1 and prefill M = 2048) as lmma programs on one core per tile
   shape: cycles, bound, utilization, throughput per mm²; throughput vs weight bits.
3. Table precompute overhead of a decoder layer: in-kernel (rebuilt by every N block), a separate kernel per
   linear, or fused into the producer (once per activation).
4. Sensitivity of the K optimum to the one uncalibrated prior (the fp16 adder's gate count).
Writes lutsim_dse.md, lutsim_dse.json and lutsim_dse_*.png.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lutc.codegen.lutsim.codegen import MatmulCodegen, Tiling, precompute_program
from lutc.sim import hw
from lutc.sim.cost import CoreConfig, program_cost

LLAMA7B = {"q/k/v/o": (4096, 4096), "gate/up": (11008, 4096), "down": (4096, 11008)}  # (N, K)
LAYER = [("q", 4096, 4096, "attn_norm"), ("k", 4096, 4096, "attn_norm"), ("v", 4096, 4096, "attn_norm"),
         ("o", 4096, 4096, "attn_out"), ("gate", 11008, 4096, "mlp_norm"), ("up", 11008, 4096, "mlp_norm"),
         ("down", 4096, 11008, "act")]


def attrs(n, k, bits, gs=128, table="int8"):
    return {"bits": bits, "n": n, "k": k, "k_pad": -(-k // gs) * gs, "group_size": gs, "zero_point": True,
            "has_bias": False, "table_dtype": table, "scale_dtype": "f16"}


def array_sweep():
    rows = []
    for a in ("f16", "s8"):
        for w in (1, 2, 4):
            for m, n, k in hw.shapes_with_volume(512, ks=(1, 2, 4, 8)):
                if m > 64 or n < 4:
                    continue
                x = hw.lut_array(m, n, k, a, w)
                rows.append({"kind": "lut", "a": a, "w": w, "shape": x.name, "m": m, "n": n, "k": k,
                             "area_um2": x.area_mm2 * 1e6, "power_mw": x.power_mw, "tflops": x.tflops,
                             "density": x.density, "tflops_per_w": x.tflops_per_w, "table_reuse": x.table_reuse,
                             "table_bits": x.table_bits})
            x = hw.mac_array(8, 8, 8, a, w)
            rows.append({"kind": "mac", "a": a, "w": w, "shape": x.name, "m": 8, "n": 8, "k": 8,
                         "area_um2": x.area_mm2 * 1e6, "power_mw": x.power_mw, "tflops": x.tflops,
                         "density": x.density, "tflops_per_w": x.tflops_per_w, "table_reuse": None,
                         "table_bits": 0})
    return rows


def workload_sweep(cfg):
    rows = []
    for a in ("s8", "f16"):
        for bits in (1, 2, 4):
            for tm, tn in ((1, 128), (2, 64), (4, 32), (8, 16)):
                arr = hw.lut_array(tm, tn, 4, a, bits)
                for m in (1, 2048):
                    cyc = 0.0
                    flops = 0.0
                    bound = {}
                    util = []
                    for name, (n, k) in LLAMA7B.items():
                        c = MatmulCodegen(attrs(n, k, bits), m, a, Tiling(tm, tn), use_tvm=False).estimate(cfg)
                        cyc += c.cycles
                        flops += 2 * m * n * k
                        bound[name] = c.bound
                        util.append(c.utilization)
                    rows.append({"a": a, "w": bits, "tile": f"M{tm}N{tn}K4", "m": m, "cycles": cyc,
                                 "bound": bound, "utilization": sum(util) / len(util),
                                 "tflops_per_mm2": flops / cyc * cfg.freq_ghz * 1e9 / 1e12 / arr.area_mm2,
                                 "array_um2": arr.area_mm2 * 1e6})
    return rows


def precompute_overhead(cfg, bits=2, a="f16"):
    out = []
    for m in (1, 16, 256, 2048):
        mm = {}
        for name, n, k, src in LAYER:
            cg = MatmulCodegen(attrs(n, k, bits), m, a, use_tvm=False)
            mm[name] = (cg.estimate(cfg).cycles, cg.BN, n, k, src)
        layer = sum(v[0] for v in mm.values())
        modes = {}
        # in-kernel: every N block rebuilds its tables (reads x, builds, no table write), serialized
        tot = 0.0
        for name, (c, bn, n, k, src) in mm.items():
            p = precompute_program(attrs(n, k, bits), m, a)
            one = program_cost(p, cfg, launch=False)
            vec = one.pipes["vector"]
            xread = m * k * 4 / cfg.global_bytes_per_cycle
            tot += -(-n // bn) * (vec + xread)
        modes["in-kernel"] = tot
        # separate kernel per linear
        modes["separate"] = sum(program_cost(precompute_program(attrs(n, k, bits), m, a), cfg).cycles
                                for _, (c, bn, n, k, src) in mm.items())
        # fused into the producer, once per distinct activation
        seen = {}
        for _, (c, bn, n, k, src) in mm.items():
            seen[src] = program_cost(precompute_program(attrs(n, k, bits), m, a), cfg, fused=True).cycles
        modes["fused"] = sum(seen.values())
        out.append({"m": m, "layer_cycles": layer,
                    **{f"share_{k}": v / (layer + v) for k, v in modes.items()},
                    **{f"cycles_{k}": v for k, v in modes.items()}})
    return out


def k_sensitivity():
    saved = hw.ADD_F16
    res = []
    try:
        for add in (100, 150, 200, 350, 700, 1400, 2800, 4000, 5000):
            hw.ADD_F16 = add
            best = max(((m, n, k) for m, n, k in hw.shapes_with_volume(512) if m <= 64 and n >= 4),
                       key=lambda s: hw.lut_array(*s, "f16", 1).density)
            res.append({"add_f16_ge": add, "best": f"M{best[0]}N{best[1]}K{best[2]}"})
    finally:
        hw.ADD_F16 = saved
    return res


def _plots(arr, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for a in ("f16", "s8"):
        rows = [r for r in arr if r["a"] == a and r["w"] == 1 and r["kind"] == "lut"]
        fig, axes = plt.subplots(2, 2, figsize=(13, 8))
        for ax, key, label in zip(axes.flat, ("area_um2", "power_mw", "density", "table_reuse"),
                                  ("area (µm²)", "power (mW)", "compute density (TFLOPs/mm², W1)",
                                   "table reuse (lookups per staged entry)")):
            for k in (1, 2, 4, 8):
                rk = [r for r in rows if r["k"] == k]
                ax.plot([r["m"] for r in rk], [r[key] for r in rk], "o-", label=f"K={k}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("M (N = 512 / (M K))")
            ax.set_title(label)
            if key in ("area_um2", "power_mw", "table_reuse"):
                ax.set_yscale("log")
            ax.legend()
        fig.suptitle(f"LUT array, M·N·K = 512, A {a}, W1 (28 nm model)")
        fig.tight_layout()
        fig.savefig(out / f"lutsim_dse_{a}.png", dpi=90)
        plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = CoreConfig()
    arr, wl, pre, sens = array_sweep(), workload_sweep(cfg), precompute_overhead(cfg), k_sensitivity()
    (out / "lutsim_dse.json").write_text(json.dumps({"arrays": arr, "workloads": wl, "precompute": pre,
                                                      "k_sensitivity": sens, "core": cfg.__dict__}, indent=1,
                                                     default=str))
    md = ["# lut-sim design-space exploration", "",
          "Generated by `python -m lutc.bench.lutsim_dse` from the area model (`sim/hw.py`, calibrated only to "
          "the DP4 anchors 61.55 / 3.39 TFLOPs/mm²) and the program cost model (`sim/cost.py`). 1 GHz.", "",
          f"DP4 anchors reproduced: LUT {hw.dp4('lut'):.2f}, MAC {hw.dp4('mac'):.2f} TFLOPs/mm² "
          f"(GE area {hw.UM2_PER_GE:.3f} µm², fp16 multiplier {hw.MUL_F16:.0f} GE, fp16 adder prior "
          f"{hw.ADD_F16:.0f} GE).", ""]
    for a in ("f16", "s8"):
        md += [f"## LUT arrays, M·N·K = 512, A {a}", "",
               "| shape | area µm² | power mW | TFLOPs/mm² W1 | W2 | W4 | TFLOPs/W W1 | table reuse W1 | table bits |",
               "|---|---|---|---|---|---|---|---|---|"]
        w1 = sorted((r for r in arr if r["a"] == a and r["w"] == 1), key=lambda r: -r["density"])
        for r in w1:
            d = {w: next(x["density"] for x in arr if x["a"] == a and x["w"] == w and x["shape"] == r["shape"]
                         and x["kind"] == r["kind"]) for w in (1, 2, 4)}
            name = r["shape"] + (" (MAC, dequant)" if r["kind"] == "mac" else "")
            md.append(f"| {name} | {r['area_um2']:.0f} | {r['power_mw']:.1f} | {d[1]:.2f} | {d[2]:.2f} | "
                      f"{d[4]:.2f} | {r['tflops_per_w']:.1f} | {r['table_reuse'] or '-'} | {r['table_bits']} |")
        md.append("")
    md += ["## LLaMA-2-7B layer GEMMs on one core (q/k/v/o 4096², gate/up 11008×4096, down 4096×11008)", "",
           "| A | W | tile | M | cycles | bound (q, gate, down) | mean util | TFLOPs/mm² of array |",
           "|---|---|---|---|---|---|---|---|"]
    for r in wl:
        b = r["bound"]
        md.append(f"| {r['a']} | {r['w']} | {r['tile']} | {r['m']} | {r['cycles']:.3g} | "
                  f"{b['q/k/v/o']}, {b['gate/up']}, {b['down']} | {r['utilization']:.1%} | "
                  f"{r['tflops_per_mm2']:.2f} |")
    md += ["", "Throughput vs weight bits (M2N64K4, M = 2048, cycles relative to W1):", ""]
    for a in ("s8", "f16"):
        c = {r["w"]: r["cycles"] for r in wl if r["a"] == a and r["tile"] == "M2N64K4" and r["m"] == 2048}
        md.append(f"- A {a}: W1 1.00, W2 {c[1] / c[2]:.3f}, W4 {c[1] / c[4]:.3f} (ideal 1/b: 0.5, 0.25)")
    md += ["", "## Table precompute overhead of a LLaMA-2-7B decoder layer's 7 linears (A f16, W2)", "",
           "| M | layer cycles | in-kernel (every N block) | separate kernel per linear | fused (once per activation) |",
           "|---|---|---|---|---|"]
    for r in pre:
        md.append(f"| {r['m']} | {r['layer_cycles']:.3g} | {r['share_in-kernel']:.1%} | {r['share_separate']:.1%} | "
                  f"{r['share_fused']:.2%} |")
    md += ["", "## K optimum vs the fp16-adder prior (A f16, W1, best shape at M·N·K = 512)", "",
           "| fp16 adder GE | best shape |", "|---|---|"]
    md += [f"| {r['add_f16_ge']} | {r['best']} |" for r in sens]
    (out / "lutsim_dse.md").write_text("\n".join(md) + "\n")
    if not args.no_plots:
        _plots(arr, out)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
