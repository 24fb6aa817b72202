"""lut-sim: lmma programs against the numpy LUT reference, assembly/JSON round trips, invalid programs,
cost-model physics, and a tiny LLaMA end to end against the reference executor."""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import lutc
from lutc.codegen.lutsim.codegen import MatmulCodegen, Tiling, precompute_program
from lutc.codegen.lutsim.isa import Addr, Box, Instr, Program, ProgramError, Reg, parse_asm
from lutc.codegen.reference.lut import lut_matmul, precompute
from lutc.passes.quantize.config import LayerQuant
from lutc.passes.quantize.rewrite import lut_attrs
from lutc.passes.quantize.weight import quantize_weight
from lutc.sim import hw
from lutc.sim.cost import program_cost
from lutc.sim.machine import Machine, execute

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def layer(rng, m, n, k, bits, gs, zp, table_dtype="int8", bias=True):
    w = rng.standard_normal((n, k)).astype(np.float32)
    x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 3)).astype(np.float32)
    qw = quantize_weight(w, LayerQuant(bits=bits, group_size=gs, symmetric=not zp and bits != "ternary", table_dtype=table_dtype))
    at = lut_attrs(qw)
    at.update(zero_point=qw.zeros is not None, has_bias=bias)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    t, ts, xs = precompute(x, at["k_pad"], at["group_size"], table_dtype)
    bufs = {"tables": t, "tscale": ts, "xsum": xs, "wq": qw.packed(), "scales": qw.scales}
    if qw.zeros is not None:
        bufs["zeros"] = qw.zeros
    if bias:
        bufs["bias"] = b
    ref = lut_matmul(t, ts, xs, qw.packed(), qw.scales, qw.zeros, b, bits=qw.bits, group_size=qw.group_size)
    return x, qw, at, bufs, ref


def int_sums(bufs, qw):
    """Per-group integer lookup sums, independently of the ISA: tables . signed one-hot weights."""
    from lutc.codegen.reference.lut import signed_onehot

    o = signed_onehot(qw.packed()).astype(np.int64)            # [N, J, 8]
    t = bufs["tables"].astype(np.int64)                          # [M, J, 8]
    g = bufs["tscale"].shape[1]
    return np.einsum("mjgx,njgx->mng", t.reshape(t.shape[0], g, -1, 8).transpose(0, 2, 1, 3),
                     o.reshape(o.shape[0], g, -1, 8).transpose(0, 2, 1, 3))


shapes = st.tuples(st.integers(1, 9), st.integers(1, 150), st.integers(1, 100))
bits_st = st.sampled_from([1, 2, 3, 4, "ternary"])
tilings = st.sampled_from([Tiling(2, 64), Tiling(1, 128), Tiling(4, 32), Tiling(8, 16)])


@SETTINGS
@given(shapes, bits_st, st.sampled_from([16, 32, 64]), st.booleans(), st.booleans(), tilings, st.integers(0, 2**31))
def test_int8_programs_match_reference_exactly(shape, bits, gs, zp, bias, tiling, seed):
    m, n, k = shape
    x, qw, at, bufs, ref = layer(np.random.default_rng(seed), m, n, k, bits, gs, zp, bias=bias)
    o = execute(precompute_program(at, m), {"x": x})                         # table build on the core
    for name in ("tables", "tscale", "xsum"):
        assert np.array_equal(o[name], bufs[name])
    p = MatmulCodegen(at, m, tiling=tiling, use_tvm=False).program()
    y = execute(p, bufs)["out"]
    # integer lookups are exact; the float64 epilogue's zero-point dot may differ from the reference's BLAS
    # dgemm in its last float64 bit, which float32 rounding almost always absorbs
    assert np.abs(y - ref).max() <= 4 * np.finfo(np.float32).eps * max(np.abs(ref).max(), 1e-30)
    if not zp:
        assert np.array_equal(y, ref)


def test_lmma_integer_sums_are_exact():
    rng = np.random.default_rng(1)
    x, qw, at, bufs, ref = layer(rng, 3, 70, 64, 3, 32, True)
    cg = MatmulCodegen(at, 3, use_tvm=False)
    # run the program with unit scales and no zero point: out = sum over groups of the int32 accumulators / 2
    b2 = dict(bufs, tscale=np.ones_like(bufs["tscale"]), scales=np.full_like(bufs["scales"], 2))
    at2 = dict(at, zero_point=False, has_bias=False)
    b2.pop("zeros"), b2.pop("bias")
    y = execute(MatmulCodegen(at2, 3, use_tvm=False).program(), b2)["out"]
    assert np.array_equal(y, int_sums(bufs, qw).sum(-1).astype(np.float32))
    assert cg.program().lmma.mnemonic == "lmma.m2n64k4.s8.u3.s32.s32"


@SETTINGS
@given(shapes, st.sampled_from([2, 4]), st.sampled_from(["f32", "f16"]), st.integers(0, 2**31))
def test_float_tables_match_to_rounding(shape, bits, a, seed):
    m, n, k = shape
    x, qw, at, bufs, ref = layer(np.random.default_rng(seed), m, n, k, bits, 32, True, table_dtype="f32")
    o = execute(precompute_program(at, m, a), {"x": x})
    b = dict(bufs, tables=o["tables"], tscale=o["tscale"], xsum=o["xsum"])
    y = execute(MatmulCodegen(at, m, a, use_tvm=False).program(), b)["out"]
    # rounding scales with the magnitude of the looked-up terms (each plane reads +-table entries, each
    # weighted by 2^t s/2, plus the zero-point term), not of the (possibly cancelling) result
    s_k = np.repeat(qw.scales.astype(np.float64), qw.group_size, axis=1)[:, :k]
    mag = np.abs(x) @ (s_k * (1 << qw.bits)).T
    tol = 1e-5 if a == "f32" else 2e-3   # fp32 accumulation order / fp16 table rounding (2^-11)
    assert np.all(np.abs(y - ref) <= tol * mag + 1e-6)


def test_tvm_schedule_gives_the_python_tiler_program():
    rng = np.random.default_rng(2)
    for bits, m, n in ((2, 5, 100), (1, 3, 64), (4, 16, 130)):
        _, _, at, bufs, ref = layer(rng, m, n, 64, bits, 32, True)
        pt = MatmulCodegen(at, m, use_tvm=True).program()
        pp = MatmulCodegen(at, m, use_tvm=False).program()
        assert pt == pp
        assert np.array_equal(execute(pt, bufs)["out"], execute(pp, bufs)["out"])


@SETTINGS
@given(shapes, bits_st, st.booleans(), st.integers(0, 2**31))
def test_assembly_and_json_round_trip(shape, bits, zp, seed):
    m, n, k = shape
    _, _, at, _, _ = layer(np.random.default_rng(seed), m, n, k, bits, 32, zp)
    for p in (MatmulCodegen(at, m, use_tvm=False).program(), precompute_program(at, m)):
        assert parse_asm(p.to_asm()) == p
        assert parse_asm(p.to_asm()).to_asm() == p.to_asm()
        assert Program.from_json(json.loads(json.dumps(p.to_json()))) == p


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(3)
    _, _, at, bufs, _ = layer(rng, 3, 64, 32, 2, 32, True)
    return MatmulCodegen(at, 3, use_tvm=False).program(), bufs


def _edit(p, i, ins):
    q = Program.from_json(p.to_json())
    q.code[i] = ins
    return q


def test_invalid_programs_are_rejected(small):
    p, bufs = small
    i_lmma = next(i for i, x in enumerate(p.code) if x.base == "lmma")
    i_ld = next(i for i, x in enumerate(p.code) if x.op == "ld.g2s")
    cases = [
        (_edit(p, 0, Instr("mul.wide", (Reg("c", 0),))), "unknown opcode 'mul.wide'"),
        (_edit(p, i_lmma, Instr("lmma.m2n64k4.s8.u4.s32.s32", p.code[i_lmma].args)), "declares .lmma"),
        (_edit(p, i_ld, Instr("ld.g2s", (Addr("sT", (0, 0, 0)), Addr("tables", (2, 0, 0)), Box((3, 8, 8))))),
         r"out-of-bounds access to tables\[3, 8, 8\]: dim 0 \[2, 5\)"),
        (_edit(p, i_ld, Instr("ld.g2s", (Addr("sT", (0, 0, 0)), Addr("nope", (0, 0, 0)), Box((1, 8, 8))))),
         "unknown buffer 'nope'"),
        (_edit(p, i_lmma, Instr(p.code[i_lmma].op, (Reg("c", 99),) + p.code[i_lmma].args[1:])),
         "register c99 does not exist"),
        (_edit(p, i_lmma, Instr(p.code[i_lmma].op, (Reg("a", 0),) + p.code[i_lmma].args[1:])),
         "must be a c register"),
    ]
    for q, msg in cases:
        with pytest.raises(ProgramError, match=msg):
            Machine(q)
    q = Program.from_json(p.to_json())
    q.code = [x for x in q.code if not (x.base == "zero" and x.args[0].cls == "c")]
    with pytest.raises(ProgramError, match="reads register c0 before anything wrote it"):
        Machine(q)
    with pytest.raises(ProgramError, match="shape m3n64k4 is not implemented"):
        parse_asm(p.to_asm().replace("m2n64k4", "m3n64k4"))
    with pytest.raises(ProgramError, match="cannot read operand"):
        parse_asm(p.to_asm() + "    zero c0, @@\n")
    with pytest.raises(ProgramError, match=r"declared u8\[2, 64, 4\], bound float32"):
        Machine(p).run(dict(bufs, wq=np.zeros((2, 64, 4), np.float32)))
    big = parse_asm(p.to_asm().replace(".shared sW u8 [2, 64, 4]", ".shared sW u8 [2, 64, 4000]"))
    with pytest.raises(ProgramError, match="shared buffers need .* bytes; the core has"):
        Machine(big)


def _cost(m, n, k, bits, gs=128, tiling=Tiling()):
    at = {"bits": bits, "n": n, "k": k, "k_pad": -(-k // gs) * gs, "group_size": gs, "zero_point": True,
          "has_bias": False, "table_dtype": "int8"}
    return MatmulCodegen(at, m, tiling=tiling, use_tvm=False)


@SETTINGS
@given(st.integers(1, 64), st.integers(1, 600), st.integers(1, 600))
def test_cost_is_monotone_in_bits_and_estimate_is_exact(m, n, k):
    costs = [_cost(m, n, k, b).estimate() for b in (1, 2, 3, 4)]
    for lo, hi in zip(costs, costs[1:]):
        assert hi.pipes["tensor"] > lo.pipes["tensor"] and hi.cycles >= lo.cycles
        assert hi.energy_nj > lo.energy_nj and hi.bytes["global"] > lo.bytes["global"]
    if m * n * k < 20000:  # the estimate (one block and group of each kind) equals the whole program's cost
        cg = _cost(m, n, k, 2)
        full, est = program_cost(cg.program()), cg.estimate()
        assert full.cycles == pytest.approx(est.cycles) and full.energy_nj == pytest.approx(est.energy_nj)


def test_bit_serial_throughput_and_memory_bound_gemv():
    gemm = [_cost(4096, 4096, 4096, b).estimate() for b in (1, 2, 4)]
    assert all(c.bound == "tensor" for c in gemm)
    r = [gemm[0].cycles / c.cycles for c in gemm]
    assert r[1] == pytest.approx(0.5, rel=0.02) and r[2] == pytest.approx(0.25, rel=0.02)   # ∝ 1/b
    assert _cost(1, 4096, 4096, 2).estimate().bound == "global"                              # GEMV


def test_array_model_calibration_and_trends():
    assert hw.dp4("lut") == pytest.approx(61.55) and hw.dp4("mac") == pytest.approx(3.39)
    for a in ("f16", "s8"):
        arrays = [hw.lut_array(m, n, k, a, 1) for m, n, k in hw.shapes_with_volume(512) if m <= 64 and n >= 4]
        best = max(arrays, key=lambda x: x.density)
        assert best.k == 4
        assert best.name in ({"M2N64K4"} if a == "f16" else {"M2N64K4", "M4N32K4"})
    w = [hw.lut_array(2, 64, 4, "f16", b).density for b in (1, 2, 4)]
    assert w[0] / w[1] == pytest.approx(2) and w[0] / w[2] == pytest.approx(4)


@pytest.mark.parametrize("bits,table", [(2, "int8"), (4, "f32")])
def test_tiny_llama_end_to_end(bits, table, tmp_path):
    import torch
    from models import Logits, tiny_llama

    model = Logits(tiny_llama())
    ids = torch.randint(0, 97, (1, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    q = lutc.QuantConfig(bits=bits, group_size=16, table_dtype=table)
    ref = lutc.compile(model, example_inputs=(ids, mask), quant=q)
    sim = lutc.compile(model, target="lut-sim", example_inputs=(ids, mask), quant=q)
    a, b = ref(ids.numpy(), mask.numpy()), sim(ids.numpy(), mask.numpy())
    if table == "int8":
        assert np.array_equal(a, b)
    else:
        assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()
    rep = sim.executable.report
    assert len(rep.layers) == 14 and all(r.cycles > 0 and 0 < r.utilization <= 1 for r in rep.layers)
    assert "linear_lut" in str(rep) and "total:" in str(rep)
    rep.save(tmp_path / "r.json")
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["layers"][0]["lmma"].startswith("lmma.m2n64k4") and d["total_cycles"] > 0
