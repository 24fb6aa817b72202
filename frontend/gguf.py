"""GGUF (llama.cpp) import: metadata -> LlamaSpec, tensors -> weights, through the LLaMA builder.

Q4_0, Q4_1 and Q8_0 linear weights keep their codes: they become ``QuantizedWeight``s (group 32) that the
builder emits as ``lut_matmul`` directly, with no requantization. Other types are dequantized to float.
llama.cpp's converter permutes the rows of the q/k projections (for its RoPE layout); that is undone here,
on the codes for quantized tensors (rows are independent, so no requantization is needed).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..ir.graph import Graph
from .errors import FrontendError
from .llama import LlamaSpec, build_llama

_NAMES = [
    (r"token_embd\.weight", "model.embed_tokens.weight"),
    (r"output_norm\.weight", "model.norm.weight"),
    (r"output\.weight", "lm_head.weight"),
    (r"blk\.(\d+)\.attn_norm\.weight", "model.layers.{}.input_layernorm.weight"),
    (r"blk\.(\d+)\.ffn_norm\.weight", "model.layers.{}.post_attention_layernorm.weight"),
    (r"blk\.(\d+)\.attn_q\.weight", "model.layers.{}.self_attn.q_proj.weight"),
    (r"blk\.(\d+)\.attn_k\.weight", "model.layers.{}.self_attn.k_proj.weight"),
    (r"blk\.(\d+)\.attn_v\.weight", "model.layers.{}.self_attn.v_proj.weight"),
    (r"blk\.(\d+)\.attn_output\.weight", "model.layers.{}.self_attn.o_proj.weight"),
    (r"blk\.(\d+)\.ffn_gate\.weight", "model.layers.{}.mlp.gate_proj.weight"),
    (r"blk\.(\d+)\.ffn_up\.weight", "model.layers.{}.mlp.up_proj.weight"),
    (r"blk\.(\d+)\.ffn_down\.weight", "model.layers.{}.mlp.down_proj.weight"),
]


def hf_name(name: str) -> str | None:
    for pat, out in _NAMES:
        m = re.fullmatch(pat, name)
        if m:
            return out.format(*m.groups())
    return None


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def read_spec(reader) -> LlamaSpec:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise FrontendError(f"GGUF architecture {arch!r} is not supported; supported: ['llama']")
    p = "llama."
    heads = int(_field(reader, p + "attention.head_count"))
    names = {t.name for t in reader.tensors}
    return LlamaSpec(
        vocab_size=int(_field(reader, p + "vocab_size") or len(_field(reader, "tokenizer.ggml.tokens"))),
        hidden_size=int(_field(reader, p + "embedding_length")),
        intermediate_size=int(_field(reader, p + "feed_forward_length")),
        num_layers=int(_field(reader, p + "block_count")), num_heads=heads,
        num_kv_heads=int(_field(reader, p + "attention.head_count_kv", heads)),
        max_positions=int(_field(reader, p + "context_length")),
        rope_theta=float(_field(reader, p + "rope.freq_base", 10000.0)),
        rms_norm_eps=float(_field(reader, p + "attention.layer_norm_rms_epsilon")),
        tie_word_embeddings="output.weight" not in names)


def unpermute_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's ``permute``: rows (h, i, 2) -> (h, 2, i) within each head."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _blocks(t, block_bytes: int) -> np.ndarray:
    """Raw bytes [rows, blocks, block_bytes] of a block-quantized tensor."""
    data = np.asarray(t.data, np.uint8)
    return data.reshape(data.shape[0], -1, block_bytes)


def quantized_from_gguf(t):
    """Q4_0 / Q4_1 / Q8_0 -> QuantizedWeight with the file's codes and scales; None for other types."""
    from gguf import GGMLQuantizationType as Q

    from ..passes.quantize.config import LayerQuant
    from ..passes.quantize.weight import QuantizedWeight

    kind = t.tensor_type
    if kind not in (Q.Q4_0, Q.Q4_1, Q.Q8_0):
        return None
    if kind == Q.Q8_0:
        b = _blocks(t, 34)
        d = b[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
        codes = (b[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        zeros, bits = np.full(d.shape, 128, np.float32), 8
    else:
        b = _blocks(t, 18 if kind == Q.Q4_0 else 20)
        d = b[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
        qs = b[..., 2:] if kind == Q.Q4_0 else b[..., 4:]
        codes = np.concatenate([qs & 15, qs >> 4], axis=-1)          # element j, then j + 16
        if kind == Q.Q4_0:
            zeros = np.full(d.shape, 8, np.float32)
        else:  # W = d*q + m = d*(q - z) with z = -m/d; a constant block (d = 0) is 1 * (0 - (-m))
            m = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
            flat = d == 0
            codes[flat] = 0
            d = np.where(flat, 1, d).astype(np.float32)
            zeros = (-m / d).astype(np.float32)
        bits = 4
    rows = codes.shape[0]
    cfg = LayerQuant(bits=bits, group_size=32, scale_dtype="f32")
    return QuantizedWeight(codes.reshape(rows, -1), d, zeros, cfg, codes.shape[1] * 32)


def permute_quantized(qw, heads: int):
    from dataclasses import replace

    return replace(qw, codes=unpermute_rows(qw.codes, heads), scales=unpermute_rows(qw.scales, heads),
                   zeros=unpermute_rows(qw.zeros, heads))


def import_gguf(path, keep_quantized: bool = True, table_dtype: str = "int8", kv_cache: bool = False,
                last_logits: bool = False) -> Graph:
    """A GGUF LLaMA file -> logits graph. ``keep_quantized=False`` dequantizes every weight to float32;
    ``kv_cache``/``last_logits`` as in :func:`lutc.frontend.llama.build_llama`."""
    import gguf

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such GGUF file: {path}")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # the gguf package raises bare ValueError/struct errors on garbage
        raise FrontendError(f"{path} is not a readable GGUF file: {e}") from None
    spec = read_spec(reader)
    weights, quantized = {}, {}
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None:
            continue  # e.g. rope_freqs: recomputed from the metadata
        heads = {"q_proj": spec.num_heads, "k_proj": spec.num_kv_heads}.get(name.split(".")[-2])
        qw = quantized_from_gguf(t) if keep_quantized and name.endswith("proj.weight") else None
        if qw is not None:
            quantized[name] = permute_quantized(qw, heads) if heads else qw
            continue
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(s) for s in reversed(t.shape)])
        weights[name] = unpermute_rows(w, heads) if heads else w.astype(np.float32)
    g = build_llama(spec, weights, quantized=quantized, table_dtype=table_dtype, kv_cache=kv_cache,
                    last_logits=last_logits)
    g.name = re.sub(r"\W", "_", str(_field(reader, "general.name", "gguf")))
    return g
