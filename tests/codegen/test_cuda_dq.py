"""The dp4a GEMV (codegen/cuda/dq.py) and its weight layouts of 1-, 2- and 4-bit codes: the repack round-trips,
a numpy twin of the kernel (int8 activations per 32 K, byte order of the weight words, integer dot products,
zero points) stays within the int8 rounding bound of float64, TVM + nvcc compile it for sm_80 and sm_90a with
the dp4a structure. Runs on a GPU compare the kernel with its twin and with float64 (skipped without one)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lutc
from lutc.codegen.cuda.build import find_nvcc
from lutc.codegen.cuda.dq import SUB, byte_offsets
from lutc.codegen.cuda.layout import CHUNK, CODE_LAYOUTS, pack_cuda, unpack_codes
from lutc.codegen.cuda.tir import KernelParams
from lutc.passes.quantize import LayerQuant
from lutc.runtime.cuda_libs import gpu_available
from twins import cuda_zero_points, real_zero_weight

RNG = np.random.default_rng(11)
needs_nvcc = pytest.mark.skipif(find_nvcc() is None, reason="nvcc (CUDA toolkit) is not installed")
needs_gpu = pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU (torch.cuda.is_available() is False)")


def dq_twin(cw, x):
    """numpy model of the dp4a GEMV, from the kernel's side: activations rounded to int8 per 32 K (absmax / 127,
    ties to even), staged as words of bytes at ``byte_offsets`` (4 bits: 4 t + h + (0, 2, 16, 18)); each weight
    word gives its byte words ``(w >> b h) & (2^b - 1) * 0x01010101``; integer dots per (row, sub-block); then
    ``s / 2 * xs * (2 dot - (z' + 2^b - 1) sum x)``. Returns (y [m, N] float64, the bound on |y - x @ W.T|)."""
    m = x.shape[0]
    xp = np.zeros((m, cw.k_pad))
    xp[:, :x.shape[1]] = x
    blocks = xp.reshape(m, -1, SUB).astype(np.float32)                       # [m, sub-block, 32], as staged
    amax = np.abs(blocks).max(-1)
    with np.errstate(divide="ignore"):   # float32 like the kernel: x * (127 / amax) can land on a tie
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    xq = np.rint(blocks * inv[..., None]).astype(np.int64)                   # |xq| <= 127, ties to even
    amax = amax.astype(np.float64)
    subs = cw.chunks * (CHUNK // SUB)
    w = cw.w.astype(np.int64)                                                # [chunk, t, n, i]
    b, hh = cw.bits, 8 // cw.bits
    dot = np.zeros((m, cw.n_pad, subs), np.int64)
    for c in range(cw.chunks):
        for i in range(CHUNK // SUB):
            sb = c * (CHUNK // SUB) + i
            for t in range(b):
                for h in range(hh):
                    bytes_ = (w[c, t, :, i, None] >> (b * h + 8 * np.arange(4))) & ((1 << b) - 1)   # [n, 4]
                    dot[:, :, sb] += xq[:, sb, byte_offsets(b, t * hh + h)] @ bytes_.T
    seg = (np.arange(subs) * SUB) // cw.group_size
    s = cw.scales.astype(np.float64)[seg].T                                  # [n, sub-block]
    zz = cuda_zero_points(cw)[seg].T + (1 << b) - 1
    xs = (amax.astype(np.float32) / np.float32(127)).astype(np.float64)
    y = (s[None] / 2 * xs[:, None, :] * (2 * dot - zz[None] * xq.sum(-1)[:, None, :])).sum(-1)
    # each activation moves by at most xs / 2 when rounded; each weight s (q - z) stays exact
    wabs = np.abs(unpack_codes(cw).astype(np.float64) - zz[:cw.n].repeat(SUB, 1) / 2) * s[:cw.n].repeat(SUB, 1)
    bound = (wabs.reshape(cw.n, subs, SUB).sum(-1)[None] * xs[:, None, :] / 2).sum(-1)
    return y[:, :cw.n], bound


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 200), k=st.integers(1, 700), group=st.sampled_from([32, 64, 128, 256, None]),
       sym=st.booleans(), bits=st.sampled_from([1, 2, 4, "ternary"]), seed=st.integers(0, 2 ** 31))
def test_code_layouts_round_trip(n, k, group, sym, bits, seed):
    rng = np.random.default_rng(seed)
    q = lutc.quantize_weight(rng.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group,
                                                                    symmetric=sym and bits != "ternary"))
    cw = pack_cuda(q, codes=True)
    b = q.bits
    assert cw.layout == CODE_LAYOUTS[b] and cw.w.shape == (cw.chunks, b, cw.n_pad, 4) and cw.w.dtype == np.uint32
    assert cw.w.flags.c_contiguous   # uploaded as is: TVM checks the strides of a compact buffer (1-bit words)
    codes = unpack_codes(cw)
    assert np.array_equal(codes[:, :q.k_pad], q.codes) and not codes[:, q.k_pad:].any()
    # fields f and F + f of a word are K positions k and k + 16 (the tensor-core kernel's half2 pairs)
    f_, mask = 16 // b, (1 << b) - 1
    for t in range(b):
        for i in range(4):
            for f in range(f_):
                word = int(cw.w[0, t, 0, i])
                assert (word >> b * f) & mask == codes[0, 32 * i + f_ * t + f]
                assert (word >> b * (f_ + f)) & mask == codes[0, 32 * i + f_ * t + f + 16]


def test_byte_offsets_cover_each_sub_block_once():
    for b in CODE_LAYOUTS:
        offs = sorted(o for r in range(8) for o in byte_offsets(b, r))
        assert offs == list(range(32)), b
    assert byte_offsets(4, 0) == [0, 2, 16, 18] and byte_offsets(4, 3) == [5, 7, 21, 23]


def test_codes_only_for_whole_fields():
    q = lutc.quantize_weight(RNG.standard_normal((8, 64)), LayerQuant(bits=3, group_size=32))
    with pytest.raises(ValueError, match="keep bit planes"):
        pack_cuda(q, codes=True)


def _weight(bits, n, k, group, sym):
    """Quantized Gaussian weights (``sym``: on the symmetric grid), or with ``sym="real"`` codes with real-valued
    zero points as GGUF's mins make them (ternary: 2-bit codes)."""
    if sym == "real":
        return real_zero_weight(2 if bits == "ternary" else bits, n, k, group, seed=n + k)
    return lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group,
                                                                       symmetric=sym and bits != "ternary"))


def fraction_slack(q, x):
    """What the float16 fractions of real-valued zero points (layout.py) may move ``x @ W.T``: each weight by at
    most s/2 2^-12 (|e| <= 1/2; none for integer zero points)."""
    if pack_cuda(q).fractions is None:
        return 0.0
    per_weight = np.repeat(q.scales.astype(np.float64) / 2 * 2.0 ** -12, q.group_size, axis=1)[:, :q.k]
    return np.abs(x) @ per_weight.T


@pytest.mark.parametrize("bits", [1, 2, 4, "ternary"])
@pytest.mark.parametrize("n, k, group, sym, m", [(100, 300, 64, False, 1), (130, 1000, 128, True, 3),
                                                 (65, 257, 32, False, 2), (257, 4100, None, False, 1),
                                                 (1000, 2048, 256, False, 1), (90, 700, 32, "real", 2),
                                                 (70, 1100, None, "real", 1)])
def test_dq_twin_within_the_int8_bound(bits, n, k, group, sym, m):
    q = _weight(bits, n, k, group, sym)
    cw = pack_cuda(q, codes=True)
    x = RNG.standard_normal((m, k)).astype(np.float32)
    x[:, ::37] *= 8                                         # a few large activations per 32 K
    x = x.astype(np.float64)
    ref = x @ q.dequantize().astype(np.float64).T
    y, bound = dq_twin(cw, x)
    assert np.all(np.abs(y - ref) <= bound * (1 + 1e-9) + fraction_slack(q, x) + 1e-12)
    rel = np.abs(y - ref).max() / np.abs(ref).max()
    # rounded, not exact: Gaussian activations lose ~0.5% rms, with the outliers ~1% (half a step of absmax / 127)
    assert 1e-4 < rel < 2e-2
    # the twin is the dequantized matmul with int8-rounded activations: the byte order pairs each code with its x
    xp = np.zeros((m, cw.k_pad))
    xp[:, :k] = x
    b = xp.reshape(m, -1, SUB).astype(np.float32)
    amax = np.abs(b).max(-1, keepdims=True)
    inv = (np.float32(127) / np.maximum(amax, np.float32(1e-30))).astype(np.float32)
    xr = (np.rint(b * inv) * (amax / np.float32(127)).astype(np.float64)).reshape(m, -1)
    # the weights of the layout: f16 scales, z' (with the f16 fractions of real-valued ones)
    grp = np.arange(cw.k_pad) // cw.group_size
    zz = (cuda_zero_points(cw)[grp].T[:n] + (1 << cw.bits) - 1) / 2
    deq = cw.scales.astype(np.float64)[grp].T[:n] * (unpack_codes(cw).astype(np.float64) - zz)
    deq[:, k:] = 0
    assert np.abs(y - xr @ deq.T).max() <= 1e-9 * np.abs(ref).max()


def _params(arch, **kw):
    base = dict(n=300, n_pad=384, k=1000, chunks=8, bits=4, group_size=64, groups=16, has_zero=True, mt=1, cps=3,
                x_dtype="float16", y_dtype="float32", arch=arch, kind="dq", layout=CODE_LAYOUTS[4])
    base.update(kw)
    return KernelParams(**base)


def test_dq_cuda_source_structure():
    from lutc.codegen.cuda.build import cuda_source

    src = cuda_source(_params("sm_90a"))
    assert src.count("__dp4a(") == 3 * 4 * 8                 # chunks x sub-blocks x (4 words x 2 halves)
    assert src.count("& 252645135)") == 3 * 4 * 8            # 0x0F0F0F0F: one mask per byte word
    two = cuda_source(_params("sm_90a", bits=2, layout=CODE_LAYOUTS[2]))
    # 2 words x 4 fields: fields 0 and 2 masked by 0x03030303 (2 after w >> 4), 1 and 3 by 0x0C0C0C0C in place
    assert two.count("__dp4a(") == 3 * 4 * 8
    assert two.count("& 50529027)") == two.count("& 202116108)") == two.count(" >> 4) &") == 3 * 4 * 4
    assert two.count("dot_ptr[1] >> 2)") == 3 * 4                # once per sub-block
    one = cuda_source(_params("sm_90a", bits=1, layout=CODE_LAYOUTS[1]))
    assert one.count("__dp4a(") == 3 * 4 * 8 and one.count("& 16843009)") == 3 * 4 * 8   # 0x01010101 per field
    assert "*(int4*)(W_ptr" in src and "__float2int_rn" in src and "__shfl_xor_sync" in src
    assert "lutc_arrive((&(CNT_ptr" in src and "R_ptr[" not in src   # split K (8 chunks, 3 per block), no residual
    direct = cuda_source(_params("sm_90a", cps=8, has_zero=False, residual=True))
    assert "lutc_arrive((&(CNT_ptr" not in direct and "R_ptr[" in direct
    with pytest.raises(ValueError, match="one activation row per block"):
        cuda_source(_params("sm_90a", mt=2))
    with pytest.raises(ValueError, match="1, 2 or 4-bit codes"):
        cuda_source(_params("sm_90a", bits=3))
    with pytest.raises(ValueError, match="1, 2 or 4-bit codes"):
        cuda_source(_params("sm_90a", bits=2))   # the layout names 4-bit codes


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("xdt", ["float16", "bfloat16", "float32"])
def test_nvcc_compiles_the_dq_kernel(arch, xdt):
    from lutc.codegen.cuda.build import cuda_source, nvcc_compile

    ptx = nvcc_compile(cuda_source(_params(arch, x_dtype=xdt)), arch, "ptx").decode()
    assert ptx.count("dp4a.s32.s32") == 3 * 4 * 8
    assert "ld.global.nc.v4.u32" in ptx or "ld.global.v4.u32" in ptx or "ld.global.nc.v4.b32" in ptx
    assert "ld.shared.v4.u32" in ptx or "ld.shared.v4.b32" in ptx     # the staged int8 activations, 16 bytes
    # the split-K handoff: one acq_rel counter increment, no full memory barriers
    assert ptx.count("atom.acq_rel.gpu.global.add.s32") == 1 and "membar.gl" not in ptx and "fence.sc" not in ptx


def test_dq_splits_k_inside_blocks_when_they_fit_the_gpu():
    """Blocks of 32 rows whose warps split K and add in shared memory: no partials, no handoff; chosen when the
    blocks fit one per SM and K is at most 4096."""
    from lutc.codegen.cuda.build import cuda_source
    from lutc.codegen.cuda.dq import choose_slices

    assert choose_slices(4, 32, 4096) == 32 and choose_slices(2, 32, 4096) == 16 and choose_slices(2, 8, 384) == 8
    assert choose_slices(2, 32, 11008) == 0 and choose_slices(2, 33, 4096) == 0   # many blocks; K > 4096
    src = cuda_source(_params("sm_90a", cps=8, slices=8))          # 8 chunks: one per warp
    assert "__launch_bounds__(256)" in src and "lutc_arrive((" not in src and "P_ptr[" not in src
    assert src.count("__dp4a(") == 4 * 8 and "R_ptr[" not in src
    two = cuda_source(_params("sm_90a", cps=8, slices=4, bits=2, layout=CODE_LAYOUTS[2], residual=True))
    assert "__launch_bounds__(128)" in two and two.count("__dp4a(") == 2 * 4 * 8 and "R_ptr[" in two
    q = lutc.quantize_weight(RNG.standard_normal((300, 1000)), LayerQuant(bits=2, group_size=64))
    f = lutc.kernels.build_lut_matmul(q, target="cuda", arch="sm_90a")
    p = f.params(1)
    assert (p.kind, p.slices, p.split) == ("dq", 8, 1)
    f._cps = {1: 3}   # a swept K split is over blocks
    assert (f.params(1).slices, f.params(1).split) == (0, 3)


def _launch_tags(p) -> list[str]:
    """The launch tags TVM records for the kernel of ``p`` (what the CUDA runtime launches it with)."""
    import re

    from tvm.runtime import _ffi_api

    from lutc.codegen.cuda.build import _compile_tvm, _parse_c_array

    blob = _parse_c_array(_ffi_api.ModulePackImportsToC(_compile_tvm(p).mod, False, ""))
    blob = blob[:blob.index(b"extern \"C\"")]   # the function table, before the CUDA source
    return [t.decode() for t in re.findall(rb"(blockIdx\.[xyz]|threadIdx\.[xyz]|tirx\.[a-z_]+)", blob)]


@pytest.mark.parametrize("slices", [0, 8])
def test_dq_waits_for_its_predecessor_only_to_read_activations(slices):
    """Programmatic dependent launch on sm_90: the weight loads come before ``griddepcontrol.wait``, every read of
    the activations and every store after it; "trigger" lets the successor in at entry; launched with the tag."""
    from lutc.codegen.cuda.build import PDL_TAG, cuda_source
    from lutc.codegen.cuda.dq import choose_pdl

    assert (choose_pdl(4, "sm_90a"), choose_pdl(2, "sm_90"), choose_pdl(1, "sm_90a")) == ("trigger", "wait", "wait")
    assert choose_pdl(4, "sm_80") == choose_pdl(2, "sm_89") == ""
    for pdl in ("wait", "trigger"):
        p = _params("sm_90a", cps=8 if slices else 3, slices=slices, pdl=pdl, residual=True)
        body = cuda_source(p).split('extern "C" __global__')[-1]
        wait = body.index("lutc_grid_wait();")
        assert body.count("lutc_grid_wait();") == 1
        assert body.rindex("*(int4*)(W_ptr") < wait < body.index("X_ptr[") and wait < body.index("R_ptr[")
        assert wait < min(body.index(f"{b}_ptr[") for b in ("Y", "P", "CNT") if f"{b}_ptr[" in body)
        assert (pdl == "trigger") == ("lutc_grid_trigger();" in body)
        if pdl == "trigger":
            assert body.index("lutc_grid_trigger();") < body.index("*(int4*)(W_ptr")
        tags = _launch_tags(p)
        assert tags[-1] == PDL_TAG and tags.count(PDL_TAG) == 1
    plain = _params("sm_90a", cps=8 if slices else 3, slices=slices)
    assert "lutc_grid_" not in cuda_source(plain).split('extern "C" __global__')[-1]
    assert PDL_TAG not in _launch_tags(plain)
    q = lutc.quantize_weight(RNG.standard_normal((300, 1000)), LayerQuant(bits=4, group_size=64))
    assert lutc.kernels.build_lut_matmul(q, target="cuda", arch="sm_90a").params(1).pdl == "trigger"
    assert lutc.kernels.build_lut_matmul(q, target="cuda", arch="sm_80").params(1).pdl == ""
    assert lutc.kernels.build_lut_matmul(q, target="cuda", arch="sm_90a").params(8).pdl == ""   # not the GEMV


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_nvcc_compiles_the_sliced_dq_kernel(arch):
    from lutc.codegen.cuda.build import cuda_source, nvcc_compile

    ptx = nvcc_compile(cuda_source(_params(arch, cps=8, slices=4)), arch, "ptx").decode()
    assert ptx.count("dp4a.s32.s32") == 2 * 4 * 8 and "atom" not in ptx   # 2 chunks per thread, no handoff
    pdl = nvcc_compile(cuda_source(_params(arch, cps=8, slices=4, pdl="trigger")), arch, "ptx").decode()
    # the PDL helpers compile to the griddepcontrol instructions on sm_90 and to nothing before
    assert (pdl.count("griddepcontrol.wait;"), pdl.count("griddepcontrol.launch_dependents;")) == (
        (1, 1) if arch == "sm_90a" else (0, 0))


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_nvcc_compiles_the_tensor_core_kernel_on_codes(arch):
    from lutc.codegen.cuda.build import cuda_source, nvcc_compile

    src = cuda_source(_params(arch, kind="mma", mt=32))
    ptx = nvcc_compile(src, arch, "ptx").decode()
    assert ptx.count("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32") == 8 * 4 * 2
    assert src.count("& 1966110)") == 8 * 2 * 2 * 2          # 0x1E001E: one mask per pair (steps x tiles x ...)
    two = cuda_source(_params(arch, kind="mma", mt=16, bits=2, layout=CODE_LAYOUTS[2]))
    assert two.count("& 393222)") == 8 * 2 * 2 * 2           # 0x60006: 2-bit codes as 2q


@needs_gpu
@pytest.mark.parametrize("bits, n", [(2, 4096), (4, 4096), (2, 1100), (4, 1100)])
def test_dq_chained_calls_see_their_predecessors_results(bits, n):
    """y <- W y (+ y) a dozen times, eagerly and in a CUDA graph: the kernels launched early (programmatic
    dependent launch) read each predecessor's output, not what was there before: identical to the same chain
    launched one after the other."""
    import torch
    import tvm_ffi

    q = lutc.quantize_weight(RNG.standard_normal((n, n)) / np.sqrt(n), LayerQuant(bits=bits, group_size=128))
    f = lutc.kernels.build_lut_matmul(q, target="cuda")
    assert f.params(1).pdl == ("trigger" if bits == 4 else "wait") or f.params(1).arch < "sm_90"
    x0 = torch.randn(1, n, dtype=torch.float32, device="cuda")

    def chain(pdl, graph):
        f._pdl = pdl
        ys = [x0.clone()] + [torch.empty(1, n, dtype=torch.float32, device="cuda") for _ in range(12)]

        def run():
            for i in range(12):
                f(ys[i], out=ys[i + 1], residual=ys[i] if i % 3 == 2 else None)
        run()   # builds/loads the kernel and its workspace outside the capture
        if graph:
            for y in ys[1:]:
                y.zero_()
            g = torch.cuda.CUDAGraph()
            with tvm_ffi.use_torch_stream(torch.cuda.graph(g)):
                run()
            g.replay()
        torch.cuda.synchronize()
        return torch.cat(ys[1:]).cpu().numpy()

    plain = chain("", False)
    assert np.isfinite(plain).all() and np.abs(plain[-1]).max() > 0
    for graph in (False, True):
        assert np.array_equal(chain(None, graph), plain), f"graph={graph}"


DQ_GPU_CASES = [(4, 100, 300, 64, False, 1, "float16"), (4, 130, 1000, 128, True, 3, "float32"),
                (4, 65, 257, 32, False, 2, "bfloat16"), (4, 4100, 576, None, False, 1, "float16"),
                (2, 100, 300, 64, False, 1, "float16"), (2, 130, 1000, 128, True, 3, "float32"),
                (1, 65, 257, 32, False, 2, "bfloat16"), ("ternary", 4100, 576, None, False, 1, "float16"),
                (4, 300, 1000, 64, "real", 1, "float16"), (2, 300, 1000, 64, "real", 3, "float16"),
                (1, 300, 1000, 64, "real", 1, "float16")]   # GPU cases: bench/gpu.py's CHECKS (--prepare builds them)


@needs_gpu
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("bits, n, k, group, sym, m, xdt", DQ_GPU_CASES)
def test_dq_kernel_matches_its_twin(bits, n, k, group, sym, m, xdt, split):
    """Both forms: K split inside 32-row blocks (chosen for these sizes), and over blocks (``split``)."""
    import torch

    q = _weight(bits, n, k, group, sym)
    f = lutc.kernels.build_lut_matmul(q, target="cuda")
    if split:
        f._cps = {1: 2}
    assert f.plan(m) == ("dq", 1) and bool(f.params(m).slices) != split
    x = torch.randn(m, k, dtype=getattr(torch, xdt), device="cuda")
    xs = x.double().cpu().numpy()
    y = f(x).double().cpu().numpy()
    twin, bound = dq_twin(f.cw, xs)
    ref = xs @ q.dequantize().astype(np.float64).T
    assert np.abs(y - twin).max() <= 1e-5 * np.abs(ref).max()     # float32 epilogue sums
    assert np.all(np.abs(y - ref) <= bound + fraction_slack(q, xs) + 1e-5 * np.abs(ref).max())
