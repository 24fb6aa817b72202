"""Float-table CPU LUT kernels (QuantConfig(table_dtype="f32")) against the float64 dequantized matmul: every
ISA this host runs, bit widths 1-4 and ternary, awkward shapes, 1 and 2 threads, with and without the fused
RMSNorm and SwiGLU prologues; and a whole tiny LLaMA on target="cpu" against target="reference".

Tolerance: the tables hold 4-term fp32 sums (relative error <= 3 * 2^-24 each) and are accumulated in fp32 over
at most 64 runs x 4 planes per group, then rescaled per group in fp32; the worst case over K = 1000 is a few
1e-6 of max |y| (measured: ~1e-6), against ~1e-2 for int8 tables. 1e-5 leaves a margin and would still catch
any wrong lookup, sign or scale (those cost >= 1e-3)."""
import numpy as np
import pytest

import lutc
from lutc.codegen.cpu.build import build_library
from lutc.codegen.cpu.isa import ISAS, supported
from lutc.codegen.cpu.kernel import kernel_params, library_params
from lutc.codegen.cpu.layout import pack_cpu
from lutc.frontend.llama import LlamaSpec, build_llama, random_llama_weights
from lutc.passes.quantize import LayerQuant
from lutc.runtime.lut import LutKernel

ISA_LIST = [i for i in ISAS if supported(i)]
RNG = np.random.default_rng(5)
TOL = 1e-5


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def exact(q, x):
    return x.astype(np.float64) @ q.dequantize().astype(np.float64).T


@pytest.mark.parametrize("isa", ISA_LIST)
@pytest.mark.parametrize("bits", [1, 2, 3, 4, "ternary"])
@pytest.mark.parametrize("n, k, group, m, sym", [(100, 300, 64, 1, False), (65, 1000, 128, 3, True),
                                                  (130, 257, 32, 17, False), (64, 512, 256, 2, False)])
def test_f32_tables_match_float64(isa, bits, n, k, group, m, sym):
    sym = sym and bits != "ternary"
    q = lutc.quantize_weight(RNG.standard_normal((n, k)),
                             LayerQuant(bits=bits, group_size=group, symmetric=sym, table_dtype="f32"))
    x = RNG.standard_normal((m, k)).astype(np.float32)
    want = exact(q, x)
    for threads in (1, 2):
        kern = lutc.kernels.build_lut_matmul(q, threads=threads, isa=isa)
        assert kern.params["table"] == "f32" and kern.table_dtype == np.float32
        y = kern(x)
        assert y.shape == (m, n) and y.dtype == np.float32
        assert rel(y, want) < TOL


@pytest.mark.parametrize("isa", ISA_LIST)
@pytest.mark.parametrize("bits", [2, 3, "ternary"])
def test_f32_tables_with_fused_rms_norm(isa, bits):
    n, k, group, eps = 77, 333, 32, 1e-5
    q = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group, table_dtype="f32"))
    cw = pack_cpu(q)
    nw = RNG.uniform(0.5, 1.5, k).astype(np.float32)
    x = RNG.standard_normal((5, k)).astype(np.float32)
    x64 = x.astype(np.float64)
    normed = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + eps) * nw
    for threads in (1, 2):
        params = kernel_params(cw, threads, isa, prologue="rms_norm", eps=eps, table="f32")
        kern = LutKernel(build_library(library_params(params)), params, cw.w, cw.scales, cw.zeros, norm_weight=nw)
        assert rel(kern(x), exact(q, normed)) < TOL


@pytest.mark.parametrize("isa", ISA_LIST)
@pytest.mark.parametrize("bits", [2, 4])
def test_f32_tables_with_fused_swiglu(isa, bits):
    """The SwiGLU prologue: rows [gate | up] of width 2k, silu(gate) * up (from e^-|gate|: large gates of either
    sign stay finite), then the LUT matmul; vs float64 silu and the dequantized matmul. The vectorized exp is
    ~1e-7 relative, far inside the tables' tolerance."""
    n, k, group = 70, 301, 32
    q = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group, table_dtype="f32"))
    cw = pack_cpu(q)
    x = (RNG.standard_normal((4, 2 * k)) * 8).astype(np.float32)
    x[0, :3] = [-120.0, 95.0, 0.0]  # e^-gate would overflow float32 at -120
    g, u = x[:, :k].astype(np.float64), x[:, k:].astype(np.float64)
    h = g / (1 + np.exp(-g)) * u
    for threads in (1, 2):
        params = kernel_params(cw, threads, isa, prologue="swiglu", table="f32")
        kern = LutKernel(build_library(library_params(params)), params, cw.w, cw.scales, cw.zeros)
        y = kern(x)
        assert y.shape == (4, n) and np.isfinite(y).all()
        assert rel(y, exact(q, h)) < TOL
        with pytest.raises(ValueError, match=f"\\[..., {2 * k}\\]"):
            kern(x[:, :k])


def test_tiny_llama_f32_tables_cpu_matches_reference(tmp_path):
    spec = LlamaSpec(vocab_size=101, hidden_size=72, intermediate_size=104, num_layers=2, num_heads=6,
                     num_kv_heads=2, max_positions=40)
    g = build_llama(spec, random_llama_weights(spec, seed=3), kv_cache=True)
    ids = np.random.default_rng(4).integers(0, spec.vocab_size, (2, 9))
    pasts = {f"past_{kv}.{i}": np.zeros((2, spec.num_kv_heads, 0, spec.head_dim), np.float32)
             for i in range(spec.num_layers) for kv in "kv"}
    for bits in (2, "ternary"):
        quant = lutc.QuantConfig(bits=bits, group_size=32, table_dtype="f32")
        ref = lutc.compile(g, target="reference", quant=quant).run(input_ids=ids, **pasts)
        cm = lutc.compile(g, target="cpu", quant=quant)
        luts = cm.executable.program.luts.values()
        assert luts and all(spec["params"]["table"] == "f32" for spec in luts)
        assert any(spec["params"].get("prologue") == "rms_norm" for spec in luts)
        cpu = cm.run(input_ids=ids, **pasts)
        for a, b in zip(ref, cpu):  # float tables on both sides: fp32 rounding only, through two layers
            assert rel(b, a) < 1e-4
    loaded = lutc.runtime.load(cm.save(tmp_path / "f32"))  # the artifact records the table mode
    for a, b in zip(cpu, loaded.run(input_ids=ids, **pasts)):
        np.testing.assert_array_equal(b, a)
