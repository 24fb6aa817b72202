"""Whole models on ``target="cuda"``: lowering, the ops library's source, artifacts, the no-GPU error; and the
device interpreter's plumbing (views, slices, the in-place KV cache, argument layouts) run on torch CPU
tensors with numpy-exact stand-ins for the GPU kernels. The kernels themselves run on the GPU machine
(``python -m lutc.bench.gpu_llm``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import lutc
from lutc.codegen.cuda.build import find_nvcc
from lutc.frontend.llama import LlamaSpec, build_llama, random_llama_weights
from lutc.runtime.cuda import canonical_strides
from lutc.runtime.cuda_libs import NoGPUError, gpu_available

needs_nvcc = pytest.mark.skipif(find_nvcc() is None, reason="nvcc (CUDA toolkit) is not installed")
SPEC = LlamaSpec(vocab_size=96, hidden_size=64, intermediate_size=80, num_layers=2, num_heads=4, num_kv_heads=2,
                 max_positions=64)


def _graph(kv_cache=True):
    return build_llama(SPEC, random_llama_weights(SPEC, seed=3), kv_cache=kv_cache, last_logits=kv_cache)


@pytest.fixture(scope="module")
def compiled():
    if find_nvcc() is None:
        pytest.skip("nvcc (CUDA toolkit) is not installed")
    return lutc.compile(_graph(), target="cuda", quant=lutc.QuantConfig(bits=4, group_size=32, table_dtype="f32"))


def test_int8_tables_decode_4_bits_on_dp4a_and_prefill_on_the_tensor_cores(tmp_path):
    if find_nvcc() is None:
        pytest.skip("nvcc (CUDA toolkit) is not installed")
    from lutc.runtime.cuda import tile_for

    cm = lutc.compile(_graph(), target="cuda", quant=lutc.QuantConfig(bits=4, group_size=32))
    for spec in cm.executable.program.luts.values():
        assert spec["kernels"] == {"1": "dq", "16": "mma", "64": "gemm"}  # 64 rows: the prefill GEMM (float32 x)
        assert spec["layout"] == "cuda-n4-c128-v1"                          # 4-bit codes (dp4a GEMV, mma)
        tiles = {int(t) for t in spec["libraries"]}
        assert [tile_for(m, tiles) for m in (1, 13, 16, 17, 200)] == [1, 16, 16, 64, 64]
    import subprocess
    import sys

    path = cm.save(tmp_path / "art")
    out = subprocess.run([sys.executable, "-m", "lutc.runtime.cli", "inspect", str(path)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "cuda-n4-c128-v1  1:dq 16:mma 64:gemm" in out.stdout   # codes: dp4a GEMV, then tensor cores


def test_lowering_covers_the_model(compiled):
    prog = compiled.executable.program
    kinds = {s.kernel for s in prog.steps}
    assert {"lut", "kv_append", "sdpa", "rms_norm", "rope", "swiglu", "views", "gather"} <= kinds
    tvm_steps = [s for s in prog.steps if "tvm" in s.attrs]
    assert all(s.kernel not in ("views", "slice", "split", "kv_append", "lut") for s in tvm_steps)
    assert prog.meta["ops_library"] in compiled.executable.libraries
    src = open(compiled.executable.libraries[prog.meta["ops_library"]].replace(".so", ".cu")).read()
    for s in tvm_steps:  # every op-library function the program calls is a kernel in the library
        assert f"{s.attrs['tvm']['fn']}_kernel" in src


def test_residual_adds_run_in_the_lut_epilogue(compiled):
    """o_proj and down_proj feed the residual adds: those adds run inside their LUT calls; q/k/v, gate/up
    and the lm_head have no add after them."""
    prog = compiled.executable.program
    luts = [s for s in prog.steps if s.kernel == "lut"]
    fused = [s for s in luts if len(s.inputs) == 2]
    assert len(fused) == 2 * SPEC.num_layers and all(prog.luts[s.attrs["lut"]].get("residual") for s in fused)
    assert not any(s.kernel == "add" for s in prog.steps)   # the model's only adds were the residual ones
    unfused = lutc.compile(_graph(), target="cuda", quant=lutc.QuantConfig(bits=4, group_size=32, table_dtype="f32"),
                           target_options={"fuse_residual": False}).executable.program
    assert sum(s.kernel == "add" for s in unfused.steps) == 2 * SPEC.num_layers
    assert all(len(s.inputs) == 1 for s in unfused.steps if s.kernel == "lut")


def test_lut_specs_from_before_the_residual_argument_are_refused(compiled):
    from lutc.runtime.artifact import ArtifactError
    from lutc.runtime.cuda import CudaLut

    spec = dict(next(iter(compiled.executable.program.luts.values())))
    del spec["kernel_args"]
    with pytest.raises(ArtifactError, match="take 7 arguments, this runtime passes 8: recompile"):
        CudaLut(spec, {}, lambda lib: None)


def test_unsupported_op_is_named():
    from lutc.codegen.cuda.lower import CudaOptions, lower
    from lutc.ir.graph import Graph
    from lutc.ir.ops import Op
    from lutc.ir.shapes import build
    from lutc.ir.types import DType, TensorType

    g = Graph("g")
    x = g.add_input("x", TensorType(DType.f32, (3, 5)))
    y = build(g, Op.SOFTMAX, [x.out], {"axis": -1}, name="probs")
    g.set_outputs([y.out], ["y"])
    with pytest.raises(NotImplementedError, match="softmax probs has no GPU kernel; the cuda target runs"):
        lower(g, CudaOptions())


@pytest.mark.skipif(gpu_available(), reason="checks the message given without a GPU")
def test_saved_artifact_refuses_to_load_without_gpu(compiled, tmp_path):
    import subprocess
    import sys

    path = compiled.save(tmp_path / "art")
    out = subprocess.run([sys.executable, "-m", "lutc.runtime.cli", "inspect", str(path)], capture_output=True,
                         text=True, timeout=300)   # inspecting needs no GPU
    assert out.returncode == 0, out.stderr
    assert "target cuda, arch sm_90a" in out.stdout and "decode steps: replayed from CUDA graphs" in out.stdout
    assert "cuda-g4-c128-v1  1:lut 8:lut" in out.stdout   # float tables: bit planes, the LUT kernel for every tile
    assert (path / "lib" / "libtvm_runtime_cuda.so").exists()
    with pytest.raises(NoGPUError, match="no CUDA GPU is present"):
        lutc.runtime.load(path)
    with pytest.raises(NoGPUError):
        compiled(np.zeros((1, 2), np.int64), *[np.zeros((1, 2, 0, 16), np.float32)] * 4)


# ---- the device interpreter over torch CPU tensors, GPU kernels replaced by exact stand-ins ----

def _standin(kind, params):
    """What the ops-library function of ``kind`` computes, on torch tensors, writing its last argument."""
    def unary(x, y):
        f = {"silu": torch.nn.functional.silu, "neg": torch.neg}[params["op"]]
        y.copy_(f(x))

    def binary(a, b, y):
        y.copy_({"add": torch.add, "mul": torch.mul, "sub": torch.sub, "div": torch.div}[params.get("op", "mul")](a, b)
                if kind == "binary" else torch.nn.functional.silu(a) * b)

    def rms_norm(x, w, y):
        y.copy_(x * torch.rsqrt((x * x).mean(-1, keepdim=True) + params["eps"]) * w)

    def rope(x, cos, sin, y):
        h = x.shape[-1] // 2
        y.copy_(x * cos + torch.cat([-x[..., h:], x[..., :h]], -1) * sin)

    def attention(q, k, v, L, n_valid, y):
        assert k.shape[2] >= L    # the cache buffer itself, spanned up to L, filled up to n_valid
        nv = int(n_valid[0])
        assert nv <= L
        k, v = k[:, :, :L], v[:, :, :L].masked_fill(torch.arange(L)[:, None] >= nv, 0)   # unfilled: anything
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        s = q @ k.transpose(-1, -2) * params["scale"]
        n = q.shape[2]
        off = nv - n if params["align"] == "bottom_right" else 0
        mask = (torch.arange(L)[None, :] <= torch.arange(n)[:, None] + off) & (torch.arange(L)[None, :] < nv)
        y.copy_(torch.softmax(s.masked_fill(~mask, float("-inf")), -1) @ v)

    def embedding(table, ids, y):
        y.copy_(table[ids])

    def linear(x, w, y):
        y.copy_(x @ w.T)
    fns = {"unary": unary, "binary": binary, "swiglu": binary, "rms_norm": rms_norm, "rope": rope,
           "attention": attention, "embedding": embedding, "linear": linear}

    def checked(*args):  # what TVM's argument checks demand of a compact buffer
        for a in args:
            if isinstance(a, torch.Tensor):
                assert a.stride() == canonical_strides(a.shape), (kind, a.shape, a.stride())
        fns[kind](*args)
    return checked


class _StandinOps:
    def __init__(self, program):
        self.fns = {}
        for s in program.steps:
            if "tvm" in s.attrs:
                t = s.attrs["tvm"]
                self.fns[t["fn"]] = _standin(t["kind"], t["params"])

    def __getitem__(self, name):
        return self.fns[name]


def _standin_lut(graph, spec):
    """The LUT call as the float-table kernel computes it: x @ dequantized W.T."""
    from lutc.codegen.cpu.lower import Lowering, _quantized_weight

    mm = graph.node(spec["node"])
    w = torch.from_numpy(_quantized_weight(Lowering(graph, None, 1, ""), mm).dequantize().astype(np.float32))

    def run(x, r=None):
        assert x.dtype == torch.float32 and (r is not None) == bool(spec.get("residual"))
        y = (x.reshape(-1, w.shape[1]) @ w.T).reshape(tuple(x.shape[:-1]) + (w.shape[0],))
        return y if r is None else y + r
    return run


def _standin_interpreter(compiled, graphs=False):
    """The device interpreter on torch CPU tensors with the stand-in kernels."""
    from lutc.runtime.cuda import CudaInterpreter, upload

    ex = compiled.executable
    luts = {lid: _standin_lut(compiled.graph, spec) for lid, spec in ex.program.luts.items()}
    return CudaInterpreter(ex.program, upload(ex.weights, "cpu"), luts, _StandinOps(ex.program), "cpu", graphs)


def _reference():
    return lutc.compile(_graph(kv_cache=False), target="reference",
                        quant=lutc.QuantConfig(bits=4, group_size=32, table_dtype="f32"))


def _empty_pasts(program) -> dict:
    return {s["name"]: np.zeros((1, 2, 0, 16), np.float32) for s in program.inputs if s["name"] != "input_ids"}


def _pasts_from(names, outs) -> dict:
    return {n.replace("present_", "past_"): v for n, v in zip(names, outs) if n.startswith("present_")}


def test_device_interpreter_plumbing_matches_reference(compiled):
    ex = compiled.executable
    interp, ref = _standin_interpreter(compiled), _reference()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, SPEC.vocab_size, (1, 11))
    full = ref(ids)
    names = [o["name"] for o in ex.program.outputs]
    pasts = _empty_pasts(ex.program)
    # a prompt of 7 tokens, then 4 decode steps fed with the device presents (kept in place)
    for lo, hi in ((0, 7), (7, 8), (8, 9), (9, 10), (10, 11)):
        outs = interp({"input_ids": ids[:, lo:hi], **pasts})
        assert isinstance(outs[0], torch.Tensor)
        np.testing.assert_allclose(outs[0][0, -1].numpy(), full[0, hi - 1], rtol=1e-4, atol=1e-4)
        pasts = _pasts_from(names, outs)
    assert pasts["past_k.0"].shape[2] == 11 and not pasts["past_k.0"].is_contiguous()   # views of the cache


def test_decode_graph_variant_matches_reference(compiled):
    """What a decode graph records (the position read on the device, attention over a bucket of the cache,
    the RoPE tables gathered), run without capturing: the same logits as the reference, presents as views."""
    from lutc.runtime.cuda_graphs import DecodeGraphs
    from lutc.runtime.decode import analyse

    ex = compiled.executable
    assert analyse(ex.program).blocker is None
    interp, ref = _standin_interpreter(compiled), _reference()
    graphs = DecodeGraphs(interp)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, SPEC.vocab_size, (1, 9))
    full = ref(ids)
    names = [o["name"] for o in ex.program.outputs]
    outs = interp({"input_ids": ids[:, :6], **_empty_pasts(ex.program)})     # prefill: eager, allocates the caches
    for pos in range(6, 9):
        pasts = _pasts_from(names, outs)
        arrays, env = lutc.runtime.program.bind_inputs(ex.program.inputs, {"input_ids": ids[:, pos:pos + 1], **pasts},
                                                       interp.convert_input)
        assert env["past"] == pos
        bufs = {slot: interp.kv.owner(arrays[slot]) for slot in graphs.site.pasts.values()}
        interp.scalars.position.fill_(pos)
        traced, limit = graphs.trace(arrays, env, span=32, s=1)
        assert limit == SPEC.max_positions - 1
        assert traced[names.index("present_k.0")].shape[2] == 32   # the bucket, masked by n_valid
        outs = graphs.finish(traced, pos, 1, bufs)
        np.testing.assert_allclose(outs[0][0, -1].numpy(), full[0, pos], rtol=1e-4, atol=1e-4)
        assert outs[names.index("present_v.1")].shape[2] == pos + 1
    # the eager interpreter goes on from the presents the graph variant handed out
    pasts = _pasts_from(names, outs)
    more = rng.integers(0, SPEC.vocab_size, (1, 1))
    eager = interp({"input_ids": more, **pasts})
    assert eager[names.index("present_k.1")].shape[2] == 10
    want = ref(np.concatenate([ids, more], 1))
    np.testing.assert_allclose(eager[0][0, -1].numpy(), want[0, -1], rtol=1e-4, atol=1e-4)


def test_decode_graph_blockers():
    from lutc.runtime.decode import analyse
    from lutc.runtime.program import Program, Step

    inputs = [{"name": "ids", "dtype": "i64", "shape": ["batch", "seq"]},
              {"name": "past_k", "dtype": "f32", "shape": ["batch", 2, "past", 8]}]
    outputs = [{"name": "logits", "value": "y"}, {"name": "present_k", "value": "pk"}]

    def program(*steps):
        return Program(inputs, outputs, {}, [Step("kv_append", ["past_k", "k"], ["pk"], {"axis": 2}, "pk"), *steps])
    assert analyse(Program(inputs[:1], outputs[:1], {}, [])).blocker == "the program has no KV cache"
    assert "reads a KV cache" in analyse(program(Step("mul", ["pk", "pk"], ["y"], {}, "m"))).blocker
    assert "depends on the cache length" in analyse(program(
        Step("views", ["k"], ["y"], {"ops": [{"op": "reshape", "shape": ["past+seq", 8], "attrs": {}}]}, "v"))).blocker
    ok = analyse(program(Step("slice", ["t"], ["y"], {"starts": ["past"], "ends": ["past+seq"], "axes": [0]}, "s")))
    assert ok.blocker is None and ok.symbol == "past" and ok.pasts == {1: 1}


class _ReplayOnCpu:
    """Stands in for a CUDA graph on the CPU: a replay re-runs the traced step into the captured outputs."""

    def __init__(self, graphs, static, env, span, s):
        self.graphs, self.args = graphs, (static, env, span, s)
        self.outs, self.limit = graphs.trace(*self.args)

    def replay(self):
        kv = self.graphs.interp.kv
        for slot in self.graphs.site.pasts.values():   # a real graph does not look the cache buffers up again
            past = self.args[0][slot]
            kv.mark_filled(past._base, past.shape[2])
        for mine, new in zip(self.outs, self.graphs.trace(*self.args)[0]):
            if mine.data_ptr() != new.data_ptr():
                mine.copy_(new)


def test_decode_graphs_generate_like_the_eager_interpreter(compiled, monkeypatch):
    """The whole graph path (first decode step eager, capture, replays, the fast path for presents passed
    back, fallbacks) with the capture emulated on the CPU: same tokens and logits as without graphs."""
    from lutc.runtime.cuda_graphs import DecodeGraphs
    from lutc.runtime.generate import generate

    def record(self, static, env, span, s):
        g = _ReplayOnCpu(self, static, env, span, s)
        return g, g.outs, g.limit
    monkeypatch.setattr(DecodeGraphs, "record", record)
    ex = compiled.executable
    graphed, eager = _standin_interpreter(compiled, graphs=True), _standin_interpreter(compiled)
    names = [o["name"] for o in ex.program.outputs]
    logits = {}

    def recording(interp, tag):
        def run(inputs):
            outs = interp(inputs)
            logits.setdefault(tag, []).append(outs[0][0, -1].clone())
            return outs
        return run
    prompt = [5, 17, 3, 88, 41]
    a = generate(recording(graphed, "g"), ex.program.inputs, names, prompt, 12, SPEC.max_positions)
    b = generate(recording(eager, "e"), ex.program.inputs, names, prompt, 12, SPEC.max_positions)
    assert a.tokens == b.tokens
    for x, y in zip(logits["g"], logits["e"]):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    g = graphed.graphs
    assert g.blocker is None and g.captures == 1 and g.replays == 10   # steps 2..11 of 12 (1: prefill, 2: eager)
    # a second generation makes new caches and a new capture (its first decode step runs eagerly, unless the
    # allocator put the new caches where the old ones were: then the shapes key is known and it replays)
    generate(graphed, ex.program.inputs, names, prompt[:3], 4, SPEC.max_positions)
    assert g.captures == 2 and g.replays in (12, 13)
    # passing an older present back (a branch) runs eagerly and copies the cache: no graph step is wrong
    pasts = _empty_pasts(ex.program)
    outs = graphed({"input_ids": np.asarray([prompt]), **pasts})
    first = _pasts_from(names, outs)
    for _ in range(3):
        outs = graphed({"input_ids": np.asarray([[7]]), **_pasts_from(names, outs)})
    branch = graphed({"input_ids": np.asarray([[9]]), **first})
    want = eager({"input_ids": np.asarray([[9]]), **_pasts_from(names, eager({"input_ids": np.asarray([prompt]), **pasts}))})
    torch.testing.assert_close(branch[0], want[0], rtol=1e-5, atol=1e-5)


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("head_dim", [64, 80, 256])
def test_attention_kernel_source_and_ptx(arch, head_dim):
    """The hand-scheduled attention kernel compiles for both architectures, as one launch with the intended
    structure (the numbers are checked on the GPU: python -m lutc.bench.gpu_llm)."""
    from lutc.codegen.cuda.attention import THREADS
    from lutc.codegen.cuda.build import nvcc_compile, prelude
    from lutc.codegen.cuda.ops import op_module

    p = {"heads": 8, "kv_heads": 2, "head_dim": head_dim, "scale": head_dim ** -0.5, "causal": True,
         "align": "bottom_right"}
    src = op_module({"attn": ("attention", p)}, arch).mod.imports[0].inspect_source()
    assert src.count("__global__ void") == 2   # declaration + definition of a single kernel
    assert f"__launch_bounds__({THREADS})" in src and "__shfl_xor_sync" in src and "expf" in src
    assert ("*(float4*)(K_ptr" in src) == (head_dim % 4 == 0)   # 16-byte key loads
    assert "int64_t" not in src.split("attn_kernel(")[1].split(")")[0].replace("int64_t* __restrict__ NV_ptr", "")
    ptx = nvcc_compile(prelude() + src, arch, "ptx").decode()
    assert f".target {arch}" in ptx and "shfl.sync.bfly" in ptx and "bar.sync" in ptx
    # sm_90: launched early (programmatic dependent launch), the kernel waits for its predecessor first thing
    body = src.split("attn_kernel(")[-1]
    body = body[body.index("{") + 1:].lstrip()
    assert body.startswith("lutc_grid_wait();") == (arch == "sm_90a") and src.count("lutc_grid_wait();") == (arch == "sm_90a")
    assert ptx.count("griddepcontrol.wait;") == (arch == "sm_90a")
    if arch == "sm_90a":   # CudaOptions(pdl=False): launched after the predecessor, no wait
        assert "lutc_grid_wait" not in op_module({"attn": ("attention", p)}, arch, pdl=False).mod.imports[0].inspect_source()


def test_decode_graphs_at_the_cache_limit_and_with_a_batch(compiled, monkeypatch):
    """Replays up to the last cache position, then the same clear error as without graphs; batch 2 works."""
    from lutc.runtime.cuda_graphs import DecodeGraphs

    def record(self, static, env, span, s):
        g = _ReplayOnCpu(self, static, env, span, s)
        return g, g.outs, g.limit
    monkeypatch.setattr(DecodeGraphs, "record", record)
    ex = compiled.executable
    names = [o["name"] for o in ex.program.outputs]
    graphed, eager = _standin_interpreter(compiled, graphs=True), _standin_interpreter(compiled)
    rng = np.random.default_rng(4)
    ids = rng.integers(0, SPEC.vocab_size, (2, SPEC.max_positions))
    pasts = {k: np.zeros((2,) + v.shape[1:], np.float32) for k, v in _empty_pasts(ex.program).items()}
    outs = graphed({"input_ids": ids[:, :50], **pasts})
    want = eager({"input_ids": ids[:, :50], **pasts})
    assert graphed.graphs.site.ids   # the embedded token ids are an input: checked on the host before a replay
    for pos in range(50, SPEC.max_positions):
        if pos == 55:   # an out-of-range id: no replay, the eager step's clear error, the caches untouched
            with pytest.raises(IndexError, match="token ids must be in"):
                graphed({"input_ids": np.full((2, 1), SPEC.vocab_size), **_pasts_from(names, outs)})
        outs = graphed({"input_ids": ids[:, pos:pos + 1], **_pasts_from(names, outs)})
        want = eager({"input_ids": ids[:, pos:pos + 1], **_pasts_from(names, want)})
        torch.testing.assert_close(outs[0], want[0], rtol=1e-5, atol=1e-5)
    assert graphed.graphs.replays >= SPEC.max_positions - 53 and outs[1].shape[2] == SPEC.max_positions
    with pytest.raises(ValueError, match="runs past the model's context"):   # the RoPE window comes first
        graphed({"input_ids": ids[:, :1], **_pasts_from(names, outs)})


def test_graph_slice_gathers_the_moving_axis_and_slices_the_others_as_eager():
    """In a decode graph a window that moves with the position is a gather at the device position; axes it
    does not move keep the eager slice's semantics (negative starts, ends past the dim)."""
    from types import SimpleNamespace

    from lutc.runtime import dims
    from lutc.runtime.cuda import DeviceScalars
    from lutc.runtime.cuda_graphs import GraphUnsupported, _shifted_slice
    from lutc.runtime.kernels import KERNELS

    sc = DeviceScalars("cpu")
    env = {"past": 5, "seq": 2}
    sc.env, sc.limit = env, float("inf")
    sc.position.fill_(5)
    run = _shifted_slice(SimpleNamespace(scalars=sc), "past")
    x = torch.arange(100 * 6, dtype=torch.float32).reshape(100, 6)
    attrs = {"starts": ["past", -4], "ends": ["past+seq", 2 ** 63 - 1], "axes": [0, 1]}
    dim = lambda d: dims.evaluate(d, env) if isinstance(d, str) else int(d)   # noqa: E731
    got = run(attrs, [x], dim)
    torch.testing.assert_close(got, KERNELS["slice"](attrs, [x], dim))
    assert sc.limit == 100 - 2   # a window of 2 fits up to position 98
    sc.position.fill_(40)        # a replay reads the position on the device
    torch.testing.assert_close(run(attrs, [x], dim), x[40:42, 2:])
    with pytest.raises(GraphUnsupported, match="does not move with past"):
        run({"starts": ["2*past"], "ends": ["2*past+1"], "axes": [0]}, [x], dim)
