"""GGUF (llama.cpp) import: metadata -> LlamaSpec, tensors -> weights, through the LLaMA builder.

Q4_0, Q4_1, Q8_0, Q2_K, Q3_K and Q4_K linear weights keep their codes: they become ``QuantizedWeight``s (groups
of 32, or 16 for Q2_K/Q3_K; the mins of Q4_1, Q2_K and Q4_K as real-valued zero points) that the builder emits as
``lut_matmul`` directly, with no requantization. Other types (Q5_*, Q6_K, ...) are dequantized to float.
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
    """Raw bytes [rows * blocks, block_bytes] of a block-quantized tensor (and the row count)."""
    data = np.asarray(t.data, np.uint8)
    return data.reshape(-1, block_bytes), data.shape[0]


def _f16(b: np.ndarray) -> np.ndarray:
    """[blocks, 2] bytes -> [blocks, 1] float32"""
    return b.copy().view(np.float16).astype(np.float32)


def _with_min(codes, s, m):
    """W = s q - m as s (q - z): z = m / s; a group whose scale is 0 (the constant -m) becomes 1 * (0 - m)."""
    flat = s == 0
    codes[np.repeat(flat, codes.shape[1] // s.shape[1], axis=1)] = 0
    s = np.where(flat, 1, s).astype(np.float32)
    return codes, s, (m / s).astype(np.float32)


# per block type: blocks [B, bytes] -> (codes [B, weights], scales [B, groups], zero points), and (bits, group);
# llama.cpp's element order (ggml-quants.c, mirrored by gguf.quants' dequantize_blocks)
def _q8_0(b):
    return (b[:, 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8), _f16(b[:, :2]), 128.0


def _q4_0(b):
    return np.concatenate([b[:, 2:] & 15, b[:, 2:] >> 4], axis=1), _f16(b[:, :2]), 8.0   # element j, then j + 16


def _q4_1(b):   # W = d q + m
    return _with_min(np.concatenate([b[:, 4:] & 15, b[:, 4:] >> 4], axis=1), _f16(b[:, :2]), -_f16(b[:, 2:4]))


def _q2_k(b):   # 16 x (4-bit scale, 4-bit min) per 256; 2-bit codes: 32 bytes x 4 shifts per 128
    sc, qs, d, dmin = b[:, :16], b[:, 16:80], _f16(b[:, 80:82]), _f16(b[:, 82:84])
    codes = (qs.reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & 3
    return _with_min(codes.reshape(-1, 256), d * (sc & 15), dmin * (sc >> 4))


def _q3_k(b):   # 16 signed 6-bit scales per 256; 3-bit codes: 2 low bits from qs, the high one from hmask (set: +4)
    hmask, qs, sc, d = b[:, :32], b[:, 32:96], b[:, 96:108], _f16(b[:, 108:110])
    lo = (sc[:, :8].reshape(-1, 1, 8) >> np.array([0, 4], np.uint8).reshape(1, 2, 1)).reshape(-1, 16) & 15
    hi = (sc[:, 8:].reshape(-1, 1, 4) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 4, 1)).reshape(-1, 16) & 3
    scales = (lo | (hi << 4)).astype(np.float32) - 32
    low = (qs.reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)).reshape(-1, 256) & 3
    high = (hmask.reshape(-1, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)).reshape(-1, 256) & 1
    return (low | (high << 2)).astype(np.uint8), d * scales, 4.0


def _q4_k(b):   # 8 x (6-bit scale, 6-bit min) per 256; 4-bit codes: 32 bytes x 2 nibbles per 64
    import gguf

    sc, mn = gguf.quants.Q4_K.get_scale_min(b[:, 4:16])
    codes = (b[:, 16:].reshape(-1, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 15
    return _with_min(codes.reshape(-1, 256), _f16(b[:, :2]) * sc, _f16(b[:, 2:4]) * mn)


def _decoders():
    from gguf import GGMLQuantizationType as Q

    return {Q.Q8_0: (_q8_0, 8, 32), Q.Q4_0: (_q4_0, 4, 32), Q.Q4_1: (_q4_1, 4, 32), Q.Q2_K: (_q2_k, 2, 16),
            Q.Q3_K: (_q3_k, 3, 16), Q.Q4_K: (_q4_k, 4, 32)}


def quantized_from_gguf(t):
    """A tensor of a block type the LUT kernels take as it is (Q4_0, Q4_1, Q8_0, Q2_K, Q3_K, Q4_K) ->
    QuantizedWeight with the file's codes, scales and zero points (real-valued for the types with mins); None
    for other types."""
    import gguf

    from ..passes.quantize.config import LayerQuant
    from ..passes.quantize.weight import QuantizedWeight

    decoder = _decoders().get(t.tensor_type)
    if decoder is None:
        return None
    decode, bits, group = decoder
    b, rows = _blocks(t, gguf.GGML_QUANT_SIZES[t.tensor_type][1])
    codes, scales, zeros = decode(b)
    zeros = np.broadcast_to(np.asarray(zeros, np.float32), scales.shape).reshape(rows, -1).copy()
    codes, scales = codes.reshape(rows, -1), scales.astype(np.float32).reshape(rows, -1)
    return QuantizedWeight(codes.astype(np.uint8), scales, zeros, LayerQuant(bits=bits, group_size=group,
                                                                             scale_dtype="f32"), codes.shape[1])


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
