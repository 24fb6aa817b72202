"""CPU kernels for op groups the lowering fuses (codegen/cpu/lower.py): fewer passes over memory and fewer
interpreter steps than the op-by-op numpy kernels, same results to float rounding."""
from __future__ import annotations

import numpy as np

from .kernels import KERNELS

FUSED = {}


def fused(name: str):
    def deco(fn):
        FUSED[name] = fn
        return fn
    return deco


@fused("rope")
def rope(attrs, ins, dim):
    """x * cos + rotate_half(x) * sin, rotate_half(x) = concat(-x2, x1) over the last axis halves."""
    x, cos, sin = ins
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half] -= x[..., half:] * sin[..., :half]
    out[..., half:] += x[..., :half] * sin[..., half:]
    return out


@fused("swiglu")
def swiglu(attrs, ins, dim):
    """silu(gate) * up, computed in place in one temporary."""
    gate, up = ins
    out = np.negative(gate)
    np.exp(out, out=out)
    out += 1
    np.divide(gate, out, out=out)
    out *= up
    return out


@fused("attention")
def attention(attrs, ins, dim):
    """Scaled dot-product attention without a mask input: GQA by reshaping queries into their KV head's
    group (no copy of K/V per query head), causal top-left or bottom-right aligned."""
    q, k, v = ins
    *lead, hq, L, d = q.shape
    hk, S = k.shape[-3], k.shape[-2]
    rep = hq // hk
    scale = attrs.get("scale") or 1 / np.sqrt(d)
    qg = q.reshape(*lead, hk, rep * L, d)                      # rows: (query head in group, position)
    s = np.matmul(qg, np.swapaxes(k, -1, -2))                  # [..., hk, rep*L, S]
    s *= np.asarray(scale, s.dtype)
    if attrs.get("causal"):
        off = S - L if attrs.get("causal_align") == "bottom_right" else 0
        if L > 1 or off < 0:
            allowed = np.arange(S)[None, :] <= (np.arange(L)[:, None] + off)   # [L, S]
            s = s.reshape(*lead, hk, rep, L, S)
            s = np.where(allowed, s, -np.inf)
            s = s.reshape(*lead, hk, rep * L, S)
    if attrs.get("causal") and (attrs.get("causal_align") == "bottom_right" and S < L):
        mx = s.max(-1, keepdims=True)  # rows with no visible key: 0, as torch's safe softmax gives
        s -= np.where(np.isfinite(mx), mx, 0)
        np.exp(s, out=s)
        tot = s.sum(-1, keepdims=True)
        s /= np.where(tot > 0, tot, 1)
    else:  # every row sees at least one key
        s -= s.max(-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(-1, keepdims=True)
    return np.matmul(s, v).reshape(q.shape[:-1] + (v.shape[-1],)).astype(q.dtype, copy=False)


@fused("views")
def views(attrs, ins, dim):
    """A chain of view ops (reshape, transpose, squeeze, unsqueeze) applied in one step."""
    x = ins[0]
    for spec in attrs["ops"]:
        if spec["op"] == "reshape":
            x = KERNELS["reshape"](spec["attrs"], [x, spec["shape"]], dim)
        else:
            x = KERNELS[spec["op"]](spec["attrs"], [x], dim)
    return x


def block_inputs(attrs, ins) -> list:
    """The attention block's [q, k, v, cos, sin, past_k, past_v]: with ``qkv_sizes``, q, k, v are views of the
    stacked projection's rows (the step's first input), split here rather than by a step of their own."""
    sizes = attrs.get("qkv_sizes")
    if sizes is not None:
        x = ins[0]
        if x.shape[-1] != sum(sizes):
            raise ValueError(f"rope_kv_attention: q/k/v rows of {sum(sizes)} expected, got {list(x.shape)}")
        a, b = sizes[0], sizes[0] + sizes[1]
        ins = [x[..., :a], x[..., a:b], x[..., b:], *ins[1:]]
    L, cos = ins[0].shape[-2], ins[3]
    if cos.ndim == 2 and cos.shape[0] != L:   # a window sliced past the end of the tables
        raise ValueError(f"the RoPE tables cover {cos.shape[0]} of this step's {L} positions: the sequence runs past "
                         "the model's context")
    return ins


def rope_kv_attention(attrs, ins, kv):
    """A decoder layer's attention block (codegen/cpu/patterns.py ATTENTION_BLOCK): q, k, v rows [b, L, h * d]
    split into heads, RoPE on q and k, k and v appended to the KV caches ``kv`` (program.KvCaches) in place,
    attention, heads merged back into rows. Returns [present_k, present_v, out]."""
    q, k, v, cos, sin, past_k, past_v = block_inputs(attrs, ins)
    hq, hk, d = attrs["heads"], attrs["kv_heads"], attrs["head_dim"]
    b, L = q.shape[:2]
    kbuf, p = kv.reserve(past_k, L)
    vbuf, _ = kv.reserve(past_v, L)
    heads = lambda x, h: x.reshape(b, L, h, d).transpose(0, 2, 1, 3)  # noqa: E731
    kbuf[:, :, p:p + L] = rope({}, [heads(k, hk), cos, sin], None)
    vbuf[:, :, p:p + L] = heads(v, hk)
    present_k, present_v = kbuf[:, :, :p + L], vbuf[:, :, :p + L]
    out = attention(attrs, [rope({}, [heads(q, hq), cos, sin], None), present_k, present_v], None)
    return [present_k, present_v, out.transpose(0, 2, 1, 3).reshape(b, L, hq * d)]
