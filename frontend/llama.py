"""A LLaMA-family model builder: emits lutc IR straight from a config and a weight dict (HF names).

This is how models arrive without an exporter (GGUF files, checkpoint directories) and how the built-in
demo model is made. The graph is the canonical form the passes produce from exports: linear, rms_norm,
silu, sdpa (causal, GQA) and RoPE written with slices.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.graph import Graph, Ref
from ..ir.ops import Op
from ..ir.shapes import build
from ..ir.types import DType, TensorType


@dataclass(frozen=True)
class LlamaSpec:
    vocab_size: int = 512
    hidden_size: int = 256
    intermediate_size: int = 688
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 2
    max_positions: int = 512
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @staticmethod
    def from_hf(config) -> "LlamaSpec":
        c = config if isinstance(config, dict) else config.to_dict()
        return LlamaSpec(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                         intermediate_size=c["intermediate_size"], num_layers=c["num_hidden_layers"],
                         num_heads=c["num_attention_heads"],
                         num_kv_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
                         max_positions=c["max_position_embeddings"],
                         rope_theta=float(c.get("rope_theta") or (c.get("rope_parameters") or {}).get("rope_theta", 1e4)),
                         rms_norm_eps=c["rms_norm_eps"], tie_word_embeddings=c.get("tie_word_embeddings", False))

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        H, I, hd = self.hidden_size, self.intermediate_size, self.head_dim
        shapes = {"model.embed_tokens.weight": (self.vocab_size, H), "model.norm.weight": (H,)}
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            shapes.update({
                p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
                p + "self_attn.q_proj.weight": (self.num_heads * hd, H),
                p + "self_attn.k_proj.weight": (self.num_kv_heads * hd, H),
                p + "self_attn.v_proj.weight": (self.num_kv_heads * hd, H),
                p + "self_attn.o_proj.weight": (H, self.num_heads * hd),
                p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H),
                p + "mlp.down_proj.weight": (H, I),
            })
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, H)
        return shapes


def random_llama_weights(spec: LlamaSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in spec.weight_shapes().items():
        if name.endswith("norm.weight"):
            out[name] = (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    return out


def rope_tables(spec: LlamaSpec) -> tuple[np.ndarray, np.ndarray]:
    hd = spec.head_dim
    inv_freq = 1.0 / spec.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    freqs = np.outer(np.arange(spec.max_positions, dtype=np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


class _Builder:
    def __init__(self, spec: LlamaSpec, weights: dict[str, np.ndarray], quantized: dict | None = None,
                 table_dtype: str = "int8"):
        self.quantized, self.table_dtype, self._tables, self._qrefs = quantized or {}, table_dtype, {}, {}
        missing = set(spec.weight_shapes()) - set(weights) - set(self.quantized)
        if missing:
            raise KeyError(f"missing weights: {sorted(missing)[:5]}{' ...' if len(missing) > 5 else ''}")
        self.spec, self.g = spec, Graph("llama")
        self.g.weights.update({k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()})
        self._consts: dict[str, Ref] = {}

    def w(self, key: str) -> Ref:
        if key not in self._consts:
            self._consts[key] = self.g.add_const(None, weight_key=key, name=key).out
        return self._consts[key]

    def linear(self, x: Ref, key: str, name: str) -> Ref:
        """x @ W.T, or a lut_matmul when the weight arrived already quantized (GGUF, MatMulNBits)."""
        if key not in self.quantized:
            return self.op(Op.LINEAR, [x, self.w(key)], name=name)
        from dataclasses import replace

        from ..passes.quantize.rewrite import add_quantized_weight, emit_lut_matmul

        qw = self.quantized[key]
        qw = replace(qw, config=replace(qw.config, table_dtype=self.table_dtype))
        if key not in self._qrefs:
            self._qrefs[key] = add_quantized_weight(self.g, key, qw)
        return emit_lut_matmul(self.g, x, qw, self._qrefs[key], None, self._tables, name)

    def op(self, op: Op, inputs, attrs=None, name=None) -> Ref:
        return build(self.g, op, inputs, attrs, name=name).out

    def shape(self, dims) -> Ref:
        return self.g.add_const(np.array(dims, dtype=object), name="shape").out

    def heads(self, x: Ref, n: int, name: str) -> Ref:
        x = self.op(Op.RESHAPE, [x, self.shape(["batch", "seq", n, self.spec.head_dim])], name=name)
        return self.op(Op.TRANSPOSE, [x], {"perm": [0, 2, 1, 3]}, name=name)

    def rope(self, x: Ref, cos: Ref, sin: Ref, name: str) -> Ref:
        half = self.spec.head_dim // 2
        x1 = self.op(Op.SLICE, [x], {"starts": [0], "ends": [half], "axes": [-1]}, name=name + "_x1")
        x2 = self.op(Op.SLICE, [x], {"starts": [half], "ends": [2 * half], "axes": [-1]}, name=name + "_x2")
        rot = self.op(Op.CONCAT, [self.op(Op.NEG, [x2]), x1], {"axis": -1}, name=name + "_rot")
        return self.op(Op.ADD, [self.op(Op.MUL, [x, cos]), self.op(Op.MUL, [rot, sin])], name=name)

    def cached(self, new: Ref, kind: str, i: int) -> Ref:
        """The keys/values of every position so far: the past ones (an input) followed by the new ones; the
        result is also an output (``present``), which the caller feeds back as ``past`` on the next step."""
        s = self.spec
        past = self.g.add_input(f"past_{kind}.{i}", TensorType(DType.f32, ("batch", s.num_kv_heads, "past", s.head_dim)))
        present = self.op(Op.CONCAT, [past.out, new], {"axis": 2}, name=f"present_{kind}.{i}")
        self.present.append((f"present_{kind}.{i}", present))
        return present

    def layer(self, i: int, h: Ref, cos: Ref, sin: Ref) -> Ref:
        s, p = self.spec, f"model.layers.{i}."
        eps = {"eps": s.rms_norm_eps}
        x = self.op(Op.RMS_NORM, [h, self.w(p + "input_layernorm.weight")], eps, name=f"l{i}_attn_norm")
        q = self.heads(self.linear(x, p + "self_attn.q_proj.weight", f"l{i}_q"), s.num_heads, f"l{i}_q")
        k = self.heads(self.linear(x, p + "self_attn.k_proj.weight", f"l{i}_k"), s.num_kv_heads, f"l{i}_k")
        v = self.heads(self.linear(x, p + "self_attn.v_proj.weight", f"l{i}_v"), s.num_kv_heads, f"l{i}_v")
        q, k = self.rope(q, cos, sin, f"l{i}_q_rope"), self.rope(k, cos, sin, f"l{i}_k_rope")
        attn = {"causal": True, "scale": s.head_dim ** -0.5}
        if self.kv_cache:
            k, v = self.cached(k, "k", i), self.cached(v, "v", i)
            attn["causal_align"] = "bottom_right"  # the new queries come after the cached positions
        a = self.op(Op.SDPA, [q, k, v], attn, name=f"l{i}_attn")
        a = self.op(Op.TRANSPOSE, [a], {"perm": [0, 2, 1, 3]}, name=f"l{i}_attn")
        a = self.op(Op.RESHAPE, [a, self.shape(["batch", "seq", s.hidden_size])], name=f"l{i}_attn")
        h = self.op(Op.ADD, [h, self.linear(a, p + "self_attn.o_proj.weight", f"l{i}_o")], name=f"l{i}_attn_residual")
        x = self.op(Op.RMS_NORM, [h, self.w(p + "post_attention_layernorm.weight")], eps, name=f"l{i}_mlp_norm")
        gate = self.op(Op.SILU, [self.linear(x, p + "mlp.gate_proj.weight", f"l{i}_gate")])
        up = self.linear(x, p + "mlp.up_proj.weight", f"l{i}_up")
        down = self.linear(self.op(Op.MUL, [gate, up], name=f"l{i}_swiglu"), p + "mlp.down_proj.weight", f"l{i}_down")
        return self.op(Op.ADD, [h, down], name=f"l{i}_mlp_residual")

    def graph(self, kv_cache: bool = False, last_logits: bool = False) -> Graph:
        s, g = self.spec, self.g
        self.kv_cache, self.present = kv_cache, []
        ids = g.add_input("input_ids", TensorType(DType.i64, ("batch", "seq")))
        h = self.op(Op.GATHER, [self.w("model.embed_tokens.weight"), ids.out], {"axis": 0}, name="embed")
        cos_t, sin_t = rope_tables(s)
        window = {"starts": ["past" if kv_cache else 0], "ends": ["past+seq" if kv_cache else "seq"], "axes": [0]}
        cos = self.op(Op.SLICE, [g.add_const(cos_t, weight_key="rope.cos").out], window, name="rope_cos")
        sin = self.op(Op.SLICE, [g.add_const(sin_t, weight_key="rope.sin").out], window, name="rope_sin")
        for i in range(s.num_layers):
            h = self.layer(i, h, cos, sin)
        if last_logits:  # generation reads only the last position: skip the head's work on the others
            h = self.op(Op.SLICE, [h], {"starts": ["seq-1"], "ends": ["seq"], "axes": [1]}, name="last_position")
        h = self.op(Op.RMS_NORM, [h, self.w("model.norm.weight")], {"eps": s.rms_norm_eps}, name="final_norm")
        head = "model.embed_tokens.weight" if s.tie_word_embeddings else "lm_head.weight"
        g.set_outputs([self.linear(h, head, "lm_head")] + [r for _, r in self.present],
                      ["logits"] + [n for n, _ in self.present])
        g.name = "llama"
        g.meta["max_positions"] = s.max_positions
        return g


def build_llama(spec: LlamaSpec, weights: dict[str, np.ndarray], quantized: dict | None = None,
                table_dtype: str = "int8", kv_cache: bool = False, last_logits: bool = False) -> Graph:
    """Logits graph ``input_ids[batch, seq] -> logits[batch, seq, vocab]`` with causal attention.

    ``quantized`` maps weight names to ``QuantizedWeight``s that become ``lut_matmul`` ops directly.
    ``kv_cache=True`` adds, per layer, inputs ``past_k.i``/``past_v.i`` [batch, kv_heads, past, head_dim] and
    outputs ``present_k.i``/``present_v.i`` (past followed by this step's positions): a decode step feeds
    the previous step's presents back; a prompt starts from ``past = 0`` arrays. ``last_logits=True``
    returns the logits of the last position only ([batch, 1, vocab])."""
    return _Builder(spec, weights, quantized, table_dtype).graph(kv_cache, last_logits)


def import_llama(source, kv_cache: bool = True, last_logits: bool = True, keep_quantized: bool = True) -> Graph:
    """A LLaMA-family model as a decoding graph (by default with a KV cache and last-position logits) from a
    GGUF file, an HF checkpoint directory (config.json + safetensors) or a transformers model object."""
    from pathlib import Path

    from .errors import FrontendError

    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix.lower() == ".gguf":
            from .gguf import import_gguf

            return import_gguf(path, keep_quantized=keep_quantized, kv_cache=kv_cache, last_logits=last_logits)
        if path.is_dir():
            spec, weights = _read_checkpoint(path)
            return build_llama(spec, weights, kv_cache=kv_cache, last_logits=last_logits)
        raise FrontendError(f"{path}: expected a .gguf file or an HF checkpoint directory")
    config = getattr(source, "config", None)
    if config is None or not hasattr(source, "state_dict"):
        raise FrontendError(f"cannot read a LLaMA model from a {type(source).__name__}: pass a GGUF file, an HF "
                            "checkpoint directory or a transformers LlamaForCausalLM")
    _check_llama(config.to_dict())
    weights = {k: v.detach().float().cpu().numpy() for k, v in source.state_dict().items()}
    return build_llama(LlamaSpec.from_hf(config), weights, kv_cache=kv_cache, last_logits=last_logits)


def _check_llama(config: dict) -> None:
    from .errors import FrontendError

    if config.get("model_type") not in ("llama", None):
        raise FrontendError(f"model_type {config.get('model_type')!r} is not a LLaMA-family model this builder knows "
                            "(supported: 'llama'); import it through ONNX or torch.export instead")


def _read_checkpoint(path) -> tuple[LlamaSpec, dict[str, np.ndarray]]:
    import json

    from .errors import FrontendError

    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise FrontendError(f"{path}: no config.json (not an HF checkpoint directory)")
    config = json.loads(cfg_file.read_text())
    _check_llama(config)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FrontendError(f"{path}: no *.safetensors weights (pytorch_model.bin is not read: it is a pickle)")
    from safetensors.numpy import load_file

    weights = {}
    for f in files:
        for k, v in load_file(str(f)).items():
            weights[k] = v.astype(np.float32)
    return LlamaSpec.from_hf(config), weights
