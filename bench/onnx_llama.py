"""An ONNX decoder with an explicit KV cache for the onnxruntime peers of bench/llm.py: the same LLaMA math as
``lutc.frontend.llama`` written in torch with past/present tensors as inputs/outputs, exported once, then
quantized to 4-bit ``MatMulNBits`` with onnxruntime's own quantizer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..frontend.llama import LlamaSpec, rope_tables


class KvLlama(nn.Module):
    def __init__(self, spec: LlamaSpec, weights: dict[str, np.ndarray]):
        super().__init__()
        self.spec = spec
        self.w = nn.ParameterDict()
        for k, v in weights.items():
            if k in spec.weight_shapes():
                self.w[k.replace(".", "__")] = nn.Parameter(torch.from_numpy(np.ascontiguousarray(v, np.float32)),
                                                            requires_grad=False)
        cos, sin = rope_tables(spec)
        self.register_buffer("cos", torch.from_numpy(cos))
        self.register_buffer("sin", torch.from_numpy(sin))

    def p(self, name):
        return self.w[name.replace(".", "__")]

    def norm(self, x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.spec.rms_norm_eps) * self.p(name)

    def forward(self, input_ids, *pasts):
        s = self.spec
        b, n = input_ids.shape
        past = pasts[0].shape[2]
        cos, sin = self.cos[past:past + n], self.sin[past:past + n]
        h = F.embedding(input_ids, self.p("model.embed_tokens.weight"))
        presents = []
        for i in range(s.num_layers):
            pre = f"model.layers.{i}."
            x = self.norm(h, pre + "input_layernorm.weight")
            q = F.linear(x, self.p(pre + "self_attn.q_proj.weight")).view(b, n, s.num_heads, s.head_dim).transpose(1, 2)
            k = F.linear(x, self.p(pre + "self_attn.k_proj.weight")).view(b, n, s.num_kv_heads, s.head_dim).transpose(1, 2)
            v = F.linear(x, self.p(pre + "self_attn.v_proj.weight")).view(b, n, s.num_kv_heads, s.head_dim).transpose(1, 2)
            half = s.head_dim // 2
            q = q * cos + torch.cat((-q[..., half:], q[..., :half]), -1) * sin
            k = k * cos + torch.cat((-k[..., half:], k[..., :half]), -1) * sin
            k = torch.cat([pasts[2 * i], k], 2)
            v = torch.cat([pasts[2 * i + 1], v], 2)
            presents += [k, v]
            rep = s.num_heads // s.num_kv_heads
            kk = k.repeat_interleave(rep, 1)
            vv = v.repeat_interleave(rep, 1)
            scores = q @ kk.transpose(2, 3) / s.head_dim ** 0.5
            total = past + n
            mask = torch.ones(n, total, dtype=torch.bool).tril(total - n)
            scores = scores.masked_fill(~mask, float("-inf"))
            a = (scores.softmax(-1) @ vv).transpose(1, 2).reshape(b, n, -1)
            h = h + F.linear(a, self.p(pre + "self_attn.o_proj.weight"))
            x = self.norm(h, pre + "post_attention_layernorm.weight")
            up = F.linear(x, self.p(pre + "mlp.up_proj.weight"))
            h = h + F.linear(F.silu(F.linear(x, self.p(pre + "mlp.gate_proj.weight"))) * up,
                             self.p(pre + "mlp.down_proj.weight"))
        h = self.norm(h[:, -1:], "model.norm.weight")
        head = "model.embed_tokens.weight" if s.tie_word_embeddings else "lm_head.weight"
        return (F.linear(h, self.p(head)), *presents)


def export(spec: LlamaSpec, weights: dict[str, np.ndarray], path: Path) -> Path:
    """The fp32 decoder as ONNX (inputs input_ids, past_k.i/past_v.i; outputs logits, present_*)."""
    model = KvLlama(spec, weights).eval()
    pasts = [torch.zeros(1, spec.num_kv_heads, 3, spec.head_dim) for _ in range(2 * spec.num_layers)]
    names = [f"past_{kv}.{i}" for i in range(spec.num_layers) for kv in "kv"]
    outs = ["logits"] + [n.replace("past", "present") for n in names]
    axes = {"input_ids": {1: "seq"}, **{n: {2: "past"} for n in names}, **{n: {2: "total"} for n in outs[1:]}}
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 5, dtype=torch.long), *pasts), str(path), dynamo=False,
                          input_names=["input_ids", *names], output_names=outs, dynamic_axes=axes, opset_version=17)
    return path


def quantize_int4(src: Path, dst: Path, block_size: int = 64) -> Path:
    """onnxruntime's MatMulNBits quantizer (4-bit, asymmetric, blocks along K) over every MatMul weight."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=block_size, is_symmetric=False, accuracy_level=4)
    q.process()
    q.model.save_model_to_file(str(dst), use_external_data_format=False)
    return dst
