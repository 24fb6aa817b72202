"""CUDA target: the weight repack round-trips and its math (emulated in numpy) matches float64; TVM + nvcc
compile the kernels for sm_80 and sm_90a and the generated CUDA/PTX has the LUT structure (shared-memory
tables, 16-byte weight loads, shared-memory lookups). Kernel runs need a GPU and are skipped without one (they
run on the GPU machine through bench/gpu.py, whose log is bench/results/gpu_check.log)."""
import numpy as np
import pytest

import lutc
from lutc.codegen.cuda.build import find_nvcc
from lutc.codegen.cuda.layout import CHUNK, CODE_LAYOUTS, LAYOUT, ROWS, pack_cuda, unpack_codes
from lutc.runtime.cuda_libs import gpu_available
from lutc.codegen.cuda.tir import KernelParams
from lutc.passes.quantize import LayerQuant
from twins import cuda_zero_points, real_zero_weight

RNG = np.random.default_rng(7)
needs_nvcc = pytest.mark.skipif(find_nvcc() is None, reason="nvcc (CUDA toolkit) is not installed")
needs_gpu = pytest.mark.skipif(not gpu_available(), reason="no CUDA GPU (torch.cuda.is_available() is False)")


def emulate(cw, x):
    """numpy model of what the kernel computes from the repacked weight: 16-entry signed tables per run of
    4 activations, lookups by plane index weighted 2^t, per-group scale s/2 and zero point z'."""
    m, k = x.shape
    xp = np.zeros((m, cw.k_pad))
    xp[:, :k] = x
    runs = xp.reshape(m, -1, 4)
    signs = ((np.arange(16)[:, None] >> np.arange(4)) & 1) * 2 - 1
    tables = runs @ signs.T                                                      # [m, R, 16]
    w = cw.w.transpose(1, 2, 0, 3)
    idx = ((w[..., None] >> (4 * np.arange(8, dtype=np.uint32))) & 15).reshape(cw.bits, cw.n_pad, -1)
    r = idx.shape[-1]
    grp = (np.arange(r) * 4) // cw.group_size
    s = cw.scales.astype(np.float64)[grp].T / 2
    zz = cuda_zero_points(cw)[grp].T
    y = np.zeros((m, cw.n_pad))
    for i in range(m):
        look = sum((1 << t) * tables[i][np.arange(r)[None, :], idx[t]] for t in range(cw.bits))
        y[i] = (s * (look - zz * runs[i].sum(-1)[None, :])).sum(-1)
    return y[:, :cw.n]


@pytest.mark.parametrize("bits", [1, 2, 3, 4, "ternary"])
@pytest.mark.parametrize("n, k, group, sym", [(100, 300, 64, False), (130, 1000, 128, True), (65, 257, 32, False),
                                              (64, 512, 256, False), (33, 200, None, False), (40, 96, 8, False)])
def test_layout_roundtrip_and_math(bits, n, k, group, sym):
    q = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group,
                                                                    symmetric=sym and bits != "ternary"))
    cw = pack_cuda(q)
    assert cw.layout == LAYOUT and cw.n_pad % ROWS == 0 and cw.k_pad % CHUNK == 0
    assert cw.w.dtype == np.uint32 and cw.w.shape == (cw.chunks, q.bits, cw.n_pad, 4)
    codes = unpack_codes(cw)
    assert np.array_equal(codes[:, :q.k_pad], q.codes) and not codes[:, q.k_pad:].any()
    x = RNG.standard_normal((3, k))
    ref = x @ q.dequantize().astype(np.float64).T
    assert np.abs(emulate(cw, x) - ref).max() <= 1e-12 * np.abs(ref).max()


def test_unsupported_weights_say_why():
    q = lutc.quantize_weight(RNG.standard_normal((8, 96)), LayerQuant(bits=2, group_size=24))
    with pytest.raises(NotImplementedError, match="group sizes"):
        pack_cuda(q)
    with pytest.raises(TypeError, match="QuantizedWeight"):
        pack_cuda(np.zeros((4, 4)))


def _params(arch, **kw):
    base = dict(n=300, n_pad=384, k=1000, chunks=8, bits=2, group_size=64, groups=16, has_zero=True, mt=2, cps=3,
                x_dtype="float16", y_dtype="float32", arch=arch)
    base.update(kw)
    return KernelParams(**base)


def test_generated_cuda_source_structure():
    from lutc.codegen.cuda.build import cuda_source

    src = cuda_source(_params("sm_90a"))
    assert src.count('extern "C" __global__') == 2         # one kernel (declaration + definition): fused
    assert "lutc_arrive((&(CNT_ptr" in src and "__threadfence" not in src   # split-K handoff: acq_rel counter, no full fences
    assert "__shared__ alignas(64) float TS_ptr[3072]" in src   # the tables: MT 2 x 3 chunks x 32 runs x 16
    assert "__shfl_xor_sync" in src                        # group sums of the activations for the zero points
    assert "*(int4*)(W_ptr" in src                         # 16-byte weight loads
    assert "& 15)]" in src                                 # table lookups indexed by 4-bit plane indices
    direct = cuda_source(_params("sm_90a", cps=8, has_zero=False, mt=1, y_dtype="float16"))
    assert "__shfl_xor_sync" not in direct and "lutc_arrive((&(CNT_ptr" not in direct and "Y_ptr[" in direct
    assert "R_ptr[" not in src and "R_ptr[" not in direct            # no residual: r is an unread dummy
    for kw in ({}, {"cps": 8}):                                      # split-K and direct epilogues add r
        assert "R_ptr[" in cuda_source(_params("sm_90a", residual=True, **kw))


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_nvcc_compiles_and_ptx_has_shared_lookups(arch):
    from lutc.codegen.cuda.build import cuda_source, nvcc_compile

    src = cuda_source(_params(arch))
    ptx = nvcc_compile(src, arch, "ptx").decode()
    assert f".target {arch}" in ptx
    assert ptx.count("ld.shared.f32") >= 3 * 32 * 2 * 2       # chunks x runs x planes x rows, fully unrolled
    assert "ld.global.nc.v4.u32" in ptx or "ld.global.v4.u32" in ptx or "ld.global.nc.v4.b32" in ptx
    assert "shfl.sync.bfly" in ptx and "bar.sync" in ptx
    fatbin = nvcc_compile(src, arch, "fatbin")
    assert len(fatbin) > 1000


@needs_nvcc
def test_build_exports_library_with_fatbin(tmp_path, monkeypatch):
    from lutc.codegen.cuda import build

    monkeypatch.setenv("LUTC_CACHE", str(tmp_path))
    q = lutc.quantize_weight(RNG.standard_normal((70, 200)), LayerQuant(bits=2, group_size=64))
    f = lutc.kernels.build_lut_matmul(q, target="cuda", arch="sm_80")
    lib = f.build(m=1)
    assert lib.exists() and lib.parent == tmp_path / "cuda"
    data = lib.read_bytes()
    assert b"fatbin" in data and b"__global__" not in data   # the fatbin is embedded, not the CUDA source
    assert f.build(m=1) == lib                                # cached
    assert build.patch_library_bin.__doc__


def test_no_gpu_says_so():
    if gpu_available():
        pytest.skip("a GPU is present")
    import torch

    from lutc.runtime.cuda_libs import NoGPUError

    q = lutc.quantize_weight(RNG.standard_normal((16, 64)), LayerQuant(bits=2, group_size=32))
    f = lutc.kernels.build_lut_matmul(q, target="cuda")
    with pytest.raises(NoGPUError, match="no CUDA GPU"):
        f(torch.zeros(1, 64))


@needs_gpu
@pytest.mark.parametrize("bits", [1, 2, 4, "ternary"])
@pytest.mark.parametrize("n, k, group, m", [(100, 300, 64, 1), (130, 1000, 128, 17), (65, 257, 32, 3)])
def test_kernel_matches_float64(bits, n, k, group, m):
    import torch

    q = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group))
    x = torch.randn(m, k, dtype=torch.float16, device="cuda")
    f = lutc.kernels.build_lut_matmul(q, target="cuda", kind="lut")
    y = f(x)
    ref = x.double().cpu().numpy() @ q.dequantize().astype(np.float64).T
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert np.abs(y.double().cpu().numpy() - ref).max() <= 1e-4 * np.abs(ref).max()   # float32 tables


@needs_gpu
@pytest.mark.parametrize("n, k, m", [(100, 300, 1), (130, 1000, 17), (4100, 576, 1)])
def test_residual_epilogue_matches_float64(n, k, m):
    import torch

    q = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=2, group_size=64))
    x = torch.randn(m, k, dtype=torch.float16, device="cuda")
    r = torch.randn(m, n, dtype=torch.float32, device="cuda")
    f = lutc.kernels.build_lut_matmul(q, target="cuda")
    y = f(x, residual=r)
    ref = x.double().cpu().numpy() @ q.dequantize().astype(np.float64).T + r.double().cpu().numpy()
    tol = 1e-4 if f.plan(m)[0] == "lut" else 2e-3   # the tensor-core kernel: float16 weights
    assert np.abs(y.double().cpu().numpy() - ref).max() <= tol * np.abs(ref).max()
    with pytest.raises(ValueError, match="residual must be a float32 tensor"):
        f(x, residual=r.half())


@needs_nvcc
def test_exported_library_exports_the_import_blob(tmp_path, monkeypatch):
    """The loader finds the device code through the dynamic symbol __tvm_ffi__library_bin."""
    import shutil
    import subprocess

    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) not installed")
    monkeypatch.setenv("LUTC_CACHE", str(tmp_path))
    q = lutc.quantize_weight(RNG.standard_normal((70, 200)), LayerQuant(bits=2, group_size=64))
    lib = lutc.kernels.build_lut_matmul(q, target="cuda", arch="sm_90a").build(m=1)
    syms = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout
    assert " __tvm_ffi__library_bin" in syms


# ---- the tensor-core kernel (codegen/cuda/mma.py) ----

def mma_dequant(cw):
    """numpy model of the tensor-core kernel's weight path, lane by lane: the lane with quad index q reads word q
    of each plane; at step st its slot pair jj takes bits 2 st + jj and 16 more into the mantissas of half2
    ``1024 + 2q``, then ``hsub2`` with ``1024 + 2z`` and ``hmul2`` with ``s/2`` in float16 (real zero points:
    ``hfma2`` with ``s/2`` and ``-e s/2``); placed at the K
    positions the kernel pairs them with (32 q + 2 st + jj and 16 more). Returns float16 [N, K_pad]."""
    from lutc.codegen.cuda.mma import CHUNK as C_

    nb, npad = cw.bits, cw.n_pad
    cb = (1 << nb) - 1
    zp = np.zeros((cw.groups, npad)) if cw.zeros is None else cw.zeros.astype(np.float64)
    frac = None if cw.fractions is None else cw.fractions.astype(np.float32)
    out = np.zeros((npad, cw.k_pad), np.float16)
    for c in range(cw.chunks):
        for q in range(4):
            grp = (c * C_ + q * 32) // cw.group_size
            kz = (1024 + zp[grp] + cb).astype(np.float16)
            s2 = (cw.scales[grp].astype(np.float32) * 0.5).astype(np.float16)
            for st in range(C_ // 16):
                for jj in range(2):
                    bit = 2 * st + jj
                    v = np.full(npad, 0x64006400, np.uint32)
                    if cw.layout in CODE_LAYOUTS.values():   # codes f and F + f of word bit // F, as 2q
                        ff = 16 // nb
                        u, f = cw.w[c, bit // ff, :, q], bit % ff
                        moved = (u << np.uint32(1)) if f == 0 else (u >> np.uint32(nb * f - 1))
                        v |= moved & np.uint32(((1 << nb) - 1) * 2 * 0x10001)
                    for t in range(nb if cw.layout == LAYOUT else 0):
                        v |= ((cw.w[c, t, :, q] >> np.uint32(bit)) & np.uint32(0x10001)) << np.uint32(t + 1)
                    halves = v.view(np.uint16).reshape(npad, 2).view(np.float16)   # little endian: lo, hi
                    if frac is None:
                        a = ((halves - kz[:, None]) * s2[:, None]).astype(np.float16)
                    else:   # hfma2 with -e s/2: the product of two float16 is exact in float32, one rounding
                        o = (frac[grp] * cw.scales[grp].astype(np.float32) * -0.5).astype(np.float16)
                        d = (halves - kz[:, None]).astype(np.float32)
                        a = (d * s2[:, None].astype(np.float32) + o[:, None].astype(np.float32)).astype(np.float16)
                    k0 = c * C_ + q * 32 + bit
                    out[:, k0], out[:, k0 + 16] = a[:, 0], a[:, 1]
    return out[:cw.n]


@pytest.mark.parametrize("bits, codes", [(1, False), (2, False), (3, False), (4, False), ("ternary", False),
                                        (1, True), (2, True), (4, True), ("ternary", True)])
@pytest.mark.parametrize("n, k, group, sym", [(100, 300, 64, False), (130, 1000, 128, True), (65, 257, 32, False),
                                              (64, 512, 256, False), (33, 200, None, False)])
def test_mma_dequantization_covers_every_weight_once(bits, codes, n, k, group, sym):
    q = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group,
                                                                    symmetric=sym and bits != "ternary"))
    cw = pack_cuda(q, codes=codes)
    got = mma_dequant(cw)[:, :q.k].astype(np.float64)
    want = q.dequantize().astype(np.float64)
    # each weight s (q - z) rounded once to float16 (the scales are float16 already)
    assert np.abs(got - want).max() <= 2.0 ** -11 * np.abs(want).max()
    x = RNG.standard_normal((5, k)).astype(np.float16).astype(np.float64)
    ref = x @ want.T
    assert np.abs(x @ got.T - ref).max() <= 2e-3 * np.abs(ref).max()


@pytest.mark.parametrize("bits, n, k, group", [(4, 100, 300, 32), (2, 130, 1000, 64), (3, 65, 640, 16),
                                               (1, 70, 257, 128), (4, 64, 1100, None)])
def test_real_valued_zero_points_layout_and_math(bits, n, k, group):
    """GGUF's mins (z = m / s, tests/twins.py: 5% of the groups off the grid): the layout keeps z_i' = round(z')
    in int8 and e = z' - z_i' in float16 rows after the scales. The table kernels' math (``emulate``) and the
    tensor-core kernels' float16 weights (``mma_dequant``) follow the true weights to the rounding of e (each
    weight moves by at most s/2 2^-12) and, for the latter, of each weight to float16."""
    q = real_zero_weight(bits, n, k, group, seed=k)
    g = q.scales.shape[1]
    zt = 2 * q.zeros.astype(np.float64) + 1 - (1 << bits)
    moved = np.repeat(q.scales.astype(np.float64) / 2 * 2.0 ** -12, q.group_size, axis=1)[:, :k]
    want = q.dequantize().astype(np.float64)
    x = RNG.standard_normal((3, k))
    ref = x @ want.T
    for codes in (False, True) if bits in CODE_LAYOUTS else (False,):
        cw = pack_cuda(q, codes=codes)
        assert cw.real_zero and cw.scale_rows().shape == (2 * cw.groups, cw.n_pad)
        assert np.array_equal(cw.scale_rows()[cw.groups:], cw.fractions) and cw.scale_rows().dtype == np.float16
        assert np.array_equal(cw.zeros[:g, :n].T, np.round(zt)) and not cw.fractions[:, n:].any()
        assert np.abs(cw.fractions[:g, :n].T - (zt - np.round(zt))).max() <= 2.0 ** -13
        if not codes:
            assert np.all(np.abs(emulate(cw, x) - ref) <= np.abs(x) @ moved.T + 1e-12 * np.abs(ref).max())
        if group is None or group % 32 == 0:
            got = mma_dequant(cw)[:, :k].astype(np.float64)
            assert np.all(np.abs(got - want) <= 2.0 ** -11 * np.abs(want) + 2 * moved)
    integer = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group))
    assert pack_cuda(integer).fractions is None and not pack_cuda(integer).real_zero   # int8 z' as before


def test_kernel_choice_by_rows_and_grouping():
    from lutc.codegen.cuda.kernel import CudaLutMatmul
    from lutc.runtime.cuda import tile_for

    q = lutc.quantize_weight(RNG.standard_normal((70, 256)), LayerQuant(bits=2, group_size=64))
    f = CudaLutMatmul(q, arch="sm_90a")   # int8 tables: 2-bit codes, the dp4a GEMV for up to 3 rows
    assert f.layout == CODE_LAYOUTS[2] and f.plan(1) == ("dq", 1) and f.plan(3) == ("dq", 1)
    assert f.plan(4) == ("mma", 16) and f.plan(17) == ("mma", 32) and f.plan(33) == ("mma", 32)
    # from 48 rows on a prefill GEMM: warpgroup MMAs for float16 on sm_90a, mma.sync for float32 (or sm_80);
    # bfloat16 keeps the tensor-core kernel
    # (64 rows: one warpgroup; more: two warpgroups multiplying what two producer warpgroups dequantized)
    assert f.plan(48) == ("wgmma", 64) and f.plan(64) == ("wgmma", 64) and f.plan(65) == ("wgmma", 128)
    assert f.plan(500) == ("wgmma", 128) and f.params(500).kind == "wgmma"
    assert f.params(500).producers == 2 and f.params(64).producers == 0 and f.params(4).producers == 0
    assert f.plan(65, "float32") == ("gemm", 128) and f.plan(48, "float32") == ("gemm", 64)
    assert f.plan(500, "bfloat16") == ("mma", 32)
    ampere = CudaLutMatmul(q, arch="sm_80")
    assert ampere.plan(500) == ("gemm", 128) and ampere.params(500).kind == "gemm"
    ampere._kind = "wgmma"
    with pytest.raises(ValueError, match="sm_90a"):
        ampere.plan(500)
    odd = CudaLutMatmul(lutc.quantize_weight(RNG.standard_normal((70, 250)), LayerQuant(bits=2, group_size=64)),
                        arch="sm_90a")   # rows of 250 float16 are not whole 16-byte copies
    assert odd.plan(500) == ("mma", 32) and odd.plan(500, "float32") == ("mma", 32)
    odd._kind = "gemm"
    with pytest.raises(ValueError, match="whole 16-byte copies"):
        odd.plan(500)
    q4 = lutc.quantize_weight(RNG.standard_normal((70, 256)), LayerQuant(bits=4, group_size=64))
    f4 = CudaLutMatmul(q4, arch="sm_90a")
    assert f4.layout == CODE_LAYOUTS[4] and f4.params(4).layout == CODE_LAYOUTS[4]
    assert [f4.plan(m) for m in (1, 3, 4, 33)] == [("dq", 1), ("dq", 1), ("mma", 16), ("mma", 64)]  # 4 bits: 64 rows
    assert f4.plan(64) == ("wgmma", 64) and f4.plan(64, "float32") == ("gemm", 64)
    planes4 = CudaLutMatmul(q4, arch="sm_90a", kind="lut")   # the LUT kernel reads bit planes
    assert planes4.layout == LAYOUT and planes4.plan(1) == ("lut", 1)
    f4._kind = "lut"
    with pytest.raises(ValueError, match="does not read weights in layout cuda-n4"):
        f4.plan(1)
    q3 = lutc.quantize_weight(RNG.standard_normal((70, 256)), LayerQuant(bits=3, group_size=64))
    with pytest.raises(NotImplementedError, match="dp4a GEMV takes 1, 2 or 4-bit weights"):
        CudaLutMatmul(q3, kind="dq")
    assert CudaLutMatmul(q3, arch="sm_90a").plan(1) == ("lut", 1)   # 3 bits: bit planes
    assert CudaLutMatmul(q3, arch="sm_90a").plan(128) == ("mma", 64)   # which the GEMM does not read
    planes = CudaLutMatmul(q, arch="sm_90a", kind="lut")
    assert planes.layout == LAYOUT and planes.plan(3) == ("lut", 4) and planes.plan(17) == ("lut", 8)
    exact = lutc.quantize_weight(RNG.standard_normal((70, 256)), LayerQuant(bits=2, group_size=64, table_dtype="f32"))
    fe = CudaLutMatmul(exact, arch="sm_90a")   # float tables asked for: bit planes, no float16
    assert fe.layout == LAYOUT and fe.plan(1) == ("lut", 1) and fe.plan(17) == ("lut", 8)
    q8 = lutc.quantize_weight(RNG.standard_normal((70, 256)), LayerQuant(bits=2, group_size=8))
    f8 = CudaLutMatmul(q8, arch="sm_90a")   # pairs (p, p+16) straddle groups of 8: planes and lookups
    assert f8.layout == LAYOUT and f8.plan(1) == ("lut", 1) and f8.plan(17) == ("lut", 8)
    with pytest.raises(NotImplementedError, match="multiple of 32"):
        CudaLutMatmul(q8, kind="mma")
    with pytest.raises(ValueError, match="kind must be one of"):
        CudaLutMatmul(q, kind="wmma")
    assert [tile_for(m, {1: 0, 16: 0, 32: 0}) for m in (1, 2, 16, 17, 32, 300)] == [1, 16, 16, 32, 32, 32]
    assert [tile_for(m, {1: 0, 8: 0}) for m in (1, 5, 300)] == [1, 8, 8]   # artifacts of the LUT kernel only


@needs_gpu
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
@pytest.mark.parametrize("m, xdt", [(1, "float16"), (3, "float16"), (17, "float16"), (130, "float16"),
                                    (70, "float32")])
def test_real_valued_zero_points_match_float64(bits, m, xdt):
    """Every kernel with real-valued zero points (GGUF's mins, 5% of the groups off the grid), the residual
    epilogue too: table lookups (3 bits, up to 3 rows) and the dp4a GEMV (1, 2, 4 bits), the tensor-core kernel,
    both prefill GEMMs (130 float16 rows: wgmma on sm_90a; 70 float32 rows: mma.sync). Float tables 1e-4, int8
    activations (dp4a) 2e-2, float16 weights on the tensor cores 2e-3. (The shapes are bench/gpu.py's CHECKS,
    whose --prepare builds these kernels for a GPU machine without TVM.)"""
    import torch

    from lutc.codegen.cuda.kernel import CudaLutMatmul

    n, k = 300, 1000
    q = real_zero_weight(bits, n, k, 64, seed=m)
    f = CudaLutMatmul(q)
    kind = f.plan(m, xdt)[0]
    assert kind == ("lut" if bits == 3 else "dq") if m <= 3 else kind != "lut"
    assert f.params(m, xdt).real_zero
    x = torch.randn(m, k, dtype=getattr(torch, xdt), device="cuda")
    r = torch.randn(m, n, dtype=torch.float32, device="cuda")
    y = f(x, residual=r).double().cpu().numpy()
    xs = (x.half() if kind in ("mma", "gemm", "wgmma") else x).double().cpu().numpy()
    ref = xs @ q.dequantize().astype(np.float64).T + r.double().cpu().numpy()
    tol = {"lut": 1e-4, "dq": 2e-2}.get(kind, 2e-3)
    assert np.abs(y - ref).max() <= tol * np.abs(ref).max()


def test_mma_cuda_source_structure():
    from lutc.codegen.cuda.build import cuda_source

    src = cuda_source(_params("sm_90a", kind="mma", mt=32, cps=3))
    assert src.count("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32") == 8 * 4 * 2   # steps x n8 x A tiles
    assert src.count("= lutc_dq_h2(") == 8 * 2 * 2 * 2         # steps x A tiles x pairs x row halves
    import re

    staged = int(re.search(r"__shared__ alignas\(64\) int XS_ptr\[(\d+)\]", src).group(1))
    assert 31 * 68 + 3 * 17 + 16 == staged                     # 32 rows x 68 words of half2 pairs (tail pad cut)
    assert "lutc_arrive((&(CNT_ptr" in src and "R_ptr[" not in src
    assert "R_ptr[" in cuda_source(_params("sm_90a", kind="mma", mt=16, cps=8, residual=True))
    with pytest.raises(ValueError, match="activation tiles of"):
        cuda_source(_params("sm_90a", kind="mma", mt=8))


@needs_nvcc
def test_real_zero_points_in_every_kernel_source():
    """With ``real_zero`` each kernel reads the fraction rows after the scales (scales[2G, N_pad]): the table and
    dp4a kernels add them to z' in float32, the tensor-core ones dequantize with one hfma2 (``lutc_dq_h2o``) where
    they had hmul2, as often; nvcc compiles each for sm_90a."""
    from lutc.codegen.cuda.build import cuda_source, nvcc_compile

    cases = {"lut": {}, "dq": {"bits": 4, "layout": CODE_LAYOUTS[4], "mt": 1},
             "mma": {"mt": 32}, "gemm": {"layout": CODE_LAYOUTS[2], "mt": 64, "cps": 8},
             "wgmma": {"layout": CODE_LAYOUTS[2], "mt": 64, "cps": 8}}
    for kind, kw in cases.items():
        base = cuda_source(_params("sm_90a", kind=kind, **kw))
        real = cuda_source(_params("sm_90a", kind=kind, real_zero=True, **kw))
        assert "lutc_dq_h2o(" not in base.split("main_kernel")[-1], kind
        if kind in ("mma", "gemm", "wgmma"):
            body = real.split("main_kernel")[-1]
            assert body.count("= lutc_dq_h2o(") == base.split("main_kernel")[-1].count("= lutc_dq_h2(") > 0, kind
            assert "= lutc_dq_h2(" not in body, kind
        else:   # a zero point of row n reads S[(G + group) * N_pad + n]: G = 16 rows of scales
            assert "S_ptr[((" in real and real.count("S_ptr[") > base.count("S_ptr["), kind
        ptx = nvcc_compile(real, "sm_90a", "ptx").decode()
        assert (kind not in ("mma", "gemm", "wgmma")) or "fma.rn.f16x2" in ptx, kind


def _gemm(arch, **kw):
    return _params(arch, **{"kind": "gemm", "bits": 2, "layout": CODE_LAYOUTS[2], "k": 1000, "mt": 64, **kw})


def test_gemm_cuda_source_structure():
    """The prefill GEMM: per chunk 8 k16 steps x MT / 16 activation tiles x 4 weight tiles of mma; every chunk's
    activations, weight words, scale and zero-point rows copied with cp.async (MT rows x 16 granules / 128
    threads, B weight slots, one scale and one zero-point granule per thread) into a pipeline of ``stages``
    chunks in dynamic shared memory (the copies appear once per prologue stage and once in the loop); one prmt
    (float16) or one f32 -> f16x2 conversion (float32) per A-fragment register; weights dequantized once per
    block and k16 step; the split-K reduction only when K is split."""
    from lutc.codegen.cuda.build import cuda_source
    from lutc.codegen.cuda.gemm import default_stages

    for mt, ns in ((64, 0), (128, 0), (64, 3)):
        src = cuda_source(_gemm("sm_90a", mt=mt, k=2000, chunks=16, cps=8, stages=ns))   # K split in 2
        ns = ns or default_stages(mt, "float16", 2)
        assert src.count("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32") == 8 * (mt // 16) * 4
        assert src.count("lutc_cp16(") - 1 == ns * (mt * 16 // 128 + 2 + 1 + 1)
        assert f"lutc_cp_wait<{ns - 2}>();" in src and "extern __shared__ __align__(64) uchar buf_dyn_shmem" in src
        assert src.count("__byte_perm(") == 8 * (mt // 16) * 4 and "= lutc_f2h2(" not in src
        assert src.count("= lutc_dq_h2(") == 8 * 4 * 2            # steps x weight tiles x pairs: once per block
        assert "lutc_arrive((&(CNT_ptr" in src
    assert default_stages(64, "float16", 2) == 4 and default_stages(128, "float16", 2) == 2
    f32 = cuda_source(_gemm("sm_90a", mt=64, cps=8, x_dtype="float32", residual=True, has_zero=False))
    assert f32.count("= lutc_f2h2(") == 8 * 4 * 4 and "__byte_perm(" not in f32
    assert f32.count("lutc_cp16(") - 1 == default_stages(64, "float32", 2) * (64 * 32 // 128 + 2 + 1)
    assert "lutc_arrive" not in f32.split("main_kernel")[-1] and "R_ptr[" in f32   # one split: direct, residual
    with pytest.raises(ValueError, match="activation tiles of"):
        cuda_source(_gemm("sm_90a", mt=32))
    with pytest.raises(ValueError, match="b-bit code layouts"):
        cuda_source(_gemm("sm_90a", layout=LAYOUT))
    with pytest.raises(ValueError, match="whole 16-byte rows"):
        cuda_source(_gemm("sm_90a", k=1001))


def _wgmma(arch="sm_90a", **kw):
    return _params(arch, **{"kind": "wgmma", "bits": 2, "layout": CODE_LAYOUTS[2], "k": 1000, "mt": 64, **kw})


def test_wgmma_cuda_source_structure():
    """The Hopper GEMM: per 64-K unit four wgmma k16 steps (one commit group), the activations copied with
    cp.async (64 rows x 8 granules / 128 threads, once per prologue stage and once in the loop), the weight row
    dequantized by its thread into 8 natural-order granules (two unrolled copies: one per B buffer), one fence
    from the generic to the async proxy per unit; sm_90a only."""
    from lutc.codegen.cuda.build import cuda_source
    from lutc.codegen.cuda.wgmma import default_stages

    ns = default_stages(64)
    src = cuda_source(_wgmma(cps=3))
    body = src.split("main_kernel(")[-1]
    assert body.count("lutc_wgmma_k16(") == 4 and body.count("lutc_wgmma_commit()") == 1
    assert "lutc_wgmma_wait<1>()" in body and "lutc_wgmma_wait<0>()" in body and body.count("lutc_fence_async()") == 1
    assert body.count("lutc_cp16s(") == ns * (64 * 8 // 128) and f"lutc_cp_wait<{ns - 2}>()" in body
    assert body.count("lutc_sts128(") == 2 * 8 and body.count("= lutc_dq_h2(") == 2 * 32
    assert body.count("__byte_perm(") == 2 * 32 and "lutc_arrive((&(CNT_ptr" in body
    direct = cuda_source(_wgmma(cps=8, residual=True, stages=3)).split("main_kernel(")[-1]
    assert "lutc_arrive" not in direct and "R_ptr[" in direct and "lutc_cp_wait<1>()" in direct
    for bad, match in ((dict(arch="sm_80"), "sm_90a"), (dict(mt=32), r"tiles of \(64, 128\)"),
                       (dict(x_dtype="float32"), "float16 activations"), (dict(layout=LAYOUT), "code layouts")):
        with pytest.raises(ValueError, match=match):
            cuda_source(_wgmma(**bad))


def test_wgmma_two_warpgroup_source_structure():
    """128 activation rows: 256 threads (two warpgroups, each its 64 rows against the whole B tile, A offset by
    64 rows of 128 bytes), each thread dequantizing one 32-K piece of its weight row per unit (half the one-
    warpgroup kernel's stores), 128 x 8 granules of activations per unit over 256 threads, a second barrier per
    unit (after the MMA wait: neither warpgroup refills what the other's MMAs still read), the split-K sums by
    both warpgroups (64 activation rows each)."""
    from lutc.codegen.cuda.build import cuda_source
    from lutc.codegen.cuda.wgmma import default_stages

    ns = default_stages(128)
    body = cuda_source(_wgmma(mt=128, cps=3)).split("main_kernel(")[-1]
    assert "__launch_bounds__(256)" in cuda_source(_wgmma(mt=128, cps=3))
    assert body.count("lutc_wgmma_k16(") == 4 and body.count("lutc_cp16s(") == ns * (128 * 8 // 256)
    assert body.count("lutc_sts128(") == 2 * 4 and body.count("= lutc_dq_h2(") == 2 * 16
    assert body.count("__syncthreads()") >= 3 and "* 8192)" in body   # 64 rows x 128 bytes into the A tile
    assert "lutc_arrive((&(CNT_ptr" in body and ">> 7) * 64)" in body   # partial sums: 64 rows per warpgroup


@pytest.mark.parametrize("mt,producers", [(128, 1), (128, 2), (64, 1)])
def test_wgmma_warp_specialized_source_structure(mt, producers):
    """Producer warpgroups copy and dequantize, consumer warpgroups multiply: 128 more threads per producer
    warpgroup; a full and an empty mbarrier per ring stage (producer count and consumer count), one wait and one
    arrive on each side per unit; the producers' own barrier (bar.sync 1) before a chunk's weight side is read;
    activations copied two units ahead by the producers only (MT x 8 granules over their threads, twice in the
    prologue and once in the loop); the B tile of a unit right after its A tile in the same stage; the epilogue
    by the consumers (their first 64 x WG rows), the split-K sums by every thread (a power of two of them: 16 rows'
    partials in flight each), every thread in the barriers."""
    from lutc.codegen.cuda.build import cuda_source
    from lutc.codegen.cuda.wgmma import default_stages

    wg, ns = mt // 64, default_stages(mt, producers)
    src = cuda_source(_wgmma(mt=mt, cps=3, producers=producers))
    body = src.split("main_kernel(")[-1]
    assert f"__launch_bounds__({(wg + producers) * 128})" in src
    assert body.count("lutc_mbar_init(") == 2 * ns
    inits = [line.split(",")[-1].strip() for line in body.splitlines() if "lutc_mbar_init(" in line]
    assert sorted(inits) == sorted([f"{producers * 128});", f"{wg * 128});"] * ns)   # arrivals: full, empty
    assert body.count("lutc_mbar_wait(") == 2 and body.count("lutc_mbar_arrive(") == 2
    assert f"lutc_bar_sync(1, {producers * 128});" in body and "lutc_cp_wait<1>();" in body and "lutc_cp_wait<2>();" in body
    assert body.count("lutc_wgmma_k16(") == 4 and body.count("lutc_fence_async()") == 1
    assert body.count("lutc_cp16s(") == 3 * (mt * 8 // (producers * 128))
    assert body.count("lutc_sts128(") == 2 * 4 * (2 // producers)
    stores = [line for line in body.splitlines() if "lutc_sts128(" in line]   # into stage u % ns: A, then B
    assert stores and all(f"(u & {ns - 1}) * {mt * 128 + 128 * 128})" in line for line in stores)
    assert f"((int)threadIdx.x) < {wg * 128}" in body and "lutc_arrive((&(CNT_ptr" in body
    sums = body.split("lutc_arrive((&(CNT_ptr")[-1]
    assert sums.count("__ldcg(") == 16 * 3   # 3 splits (cps = 3 of K = 1000's 8 chunks) x 16 rows in flight
    with pytest.raises(ValueError, match="producer warpgroups"):
        cuda_source(_wgmma(producers=3))


@pytest.mark.parametrize("stages,la", [(4, 2), (5, 2), (6, 4)])
def test_wgmma_producer_lookahead_follows_the_ring(stages, la):
    """With ``stages`` ring stages the producers copy activations ``la`` units ahead (the prologue issues ``la``
    units, the loop waits for all but ``la`` and ``la - 1`` commit groups) and a chunk's weight side ``la / 2``
    chunks ahead in a ring of ``la / 2 + 1`` slots (``la / 2`` chunks' copies in the prologue)."""
    from lutc.codegen.cuda.build import cuda_source
    from lutc.codegen.cuda.wgmma import lookahead

    assert lookahead(stages) == la
    body = cuda_source(_wgmma(mt=128, cps=8, producers=2, stages=stages)).split("main_kernel(")[-1]
    waits = sorted({line.strip() for line in body.splitlines() if "lutc_cp_wait<" in line})
    assert waits == [f"lutc_cp_wait<{la - 1}>();", f"lutc_cp_wait<{la}>();"]
    loop = body.index("for (int u = 0;")
    prologue, inner = body[:loop], body[loop:]
    assert prologue.count("W_ptr[") == (la // 2) * 2   # two code-word planes per chunk (W2)
    slots = la // 2 + 1
    ring = "& 1)" if slots == 2 else f"% {slots})"
    slot = inner.split("lutc_cp16((&(((int*)buf_dyn_shmem_ptr)")[1].split("W_ptr[")[0]
    assert f"(u >> 1) + {la // 2}) {ring}" in slot    # chunk u / 2 + la / 2 into its ring slot


@needs_nvcc
def test_nvcc_compiles_the_warp_specialized_wgmma_gemm():
    from lutc.codegen.cuda.build import cuda_source, nvcc_compile

    for bits, producers in ((1, 1), (2, 2), (4, 1)):
        ptx = nvcc_compile(cuda_source(_wgmma(bits=bits, layout=CODE_LAYOUTS[bits], mt=128, producers=producers)),
                           "sm_90a", "ptx").decode()
        n = ptx.count("wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16")
        assert n >= 4 and n % 4 == 0 and f".maxntid {(2 + producers) * 128}" in ptx
        assert "mbarrier.try_wait.parity.shared::cta.b64" in ptx and "mbarrier.init.shared::cta.b64" in ptx
        assert "mbarrier.arrive.shared::cta.b64" in ptx and "bar.sync" in ptx


@needs_nvcc
def test_nvcc_compiles_the_wgmma_gemm():
    from lutc.codegen.cuda.build import cuda_source, nvcc_compile

    for bits in (1, 2, 4):
        ptx = nvcc_compile(cuda_source(_wgmma(bits=bits, layout=CODE_LAYOUTS[bits])), "sm_90a", "ptx").decode()
        assert ptx.count("wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16") == 4
        assert ptx.count("fence.proxy.async.shared::cta") == 1 and ptx.count("st.shared.v4.b32") == 2 * 8
        assert ptx.count("cp.async.cg.shared.global") == 4 * 4 + 3 * (bits + 2)   # + weight side at 3 sites
        two = nvcc_compile(cuda_source(_wgmma(bits=bits, layout=CODE_LAYOUTS[bits], mt=128)), "sm_90a", "ptx").decode()
        assert two.count("wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16") == 4 and ".maxntid 256" in two


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_nvcc_compiles_the_gemm(arch):
    from lutc.codegen.cuda.build import cuda_source, nvcc_compile

    ptx = nvcc_compile(cuda_source(_gemm(arch, bits=4, layout=CODE_LAYOUTS[4], stages=2)), arch, "ptx").decode()
    assert ptx.count("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32") == 8 * 4 * 4
    assert ptx.count("cp.async.cg.shared.global") == 2 * (64 * 16 // 128 + 4 + 2) and "cp.async.wait_group 0" in ptx
    assert ptx.count("ld.shared.v4.u32") + ptx.count("ld.shared.v4.b32") == 2 * 4 * 2 * 2   # per chunk: step groups x A tiles x row halves x (p, p + 16)
    assert "prmt.b32" in ptx


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_nvcc_compiles_the_tensor_core_kernel(arch):
    from lutc.codegen.cuda.build import cuda_source, nvcc_compile

    ptx = nvcc_compile(cuda_source(_params(arch, kind="mma", mt=32, bits=4)), arch, "ptx").decode()
    assert ptx.count("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32") == 8 * 4 * 2
    assert "sub.f16x2" in ptx or "sub.rn.f16x2" in ptx
    assert "mul.f16x2" in ptx or "mul.rn.f16x2" in ptx


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_nvcc_compiles_bfloat16_activations(arch):
    """bfloat16 activations: both kernels read them as 16-bit values and widen them to float32 (tables) or
    round them to float16 (tensor-core staging); the rest of each kernel is the float16 one."""
    from lutc.codegen.cuda.build import cuda_source, nvcc_compile

    lut = cuda_source(_params(arch, x_dtype="bfloat16"))
    assert "nv_bfloat16* __restrict__ X_ptr" in lut and "(float)X_ptr[" in lut
    ptx = nvcc_compile(lut, arch, "ptx").decode()
    assert ptx.count("ld.shared.f32") >= 3 * 32 * 2 * 2
    assert "ld.global.nc.u16" in ptx or "ld.global.nc.b16" in ptx or "ld.global.u16" in ptx or "ld.global.b16" in ptx
    mma_src = cuda_source(_params(arch, kind="mma", mt=32, bits=4, x_dtype="bfloat16"))
    assert "nv_bfloat16* __restrict__ X_ptr" in mma_src
    ptx = nvcc_compile(mma_src, arch, "ptx").decode()
    assert ptx.count("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32") == 8 * 4 * 2


@needs_gpu
@pytest.mark.parametrize("n, k, group, m", [(100, 300, 64, 1), (130, 1000, 128, 3), (65, 257, 32, 17),
                                            (300, 600, None, 33)])
def test_bfloat16_activations_match_float64(n, k, group, m):
    import torch

    q = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=2, group_size=group))
    x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
    f = lutc.kernels.build_lut_matmul(q, target="cuda")
    y = f(x)
    ref = x.double().cpu().numpy() @ q.dequantize().astype(np.float64).T
    tol = 1e-4 if f.plan(m)[0] == "lut" else 2e-3   # float32 tables; float16 weights on the tensor cores
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert np.abs(y.double().cpu().numpy() - ref).max() <= tol * np.abs(ref).max()
    with pytest.raises(TypeError, match="bfloat16"):
        f(x.to(torch.int8))


@needs_gpu
@pytest.mark.parametrize("bits", [1, 2, 3, 4, "ternary"])
@pytest.mark.parametrize("n, k, group, m, xdt", [(100, 300, 64, 4, "float16"), (130, 1000, 128, 17, "float32"),
                                                 (65, 257, 32, 70, "float16"), (300, 600, None, 33, "float32")])
def test_tensor_core_kernel_matches_float64(bits, n, k, group, m, xdt):
    import torch

    q = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group))
    x = torch.randn(m, k, dtype=getattr(torch, xdt), device="cuda")
    f = lutc.kernels.build_lut_matmul(q, target="cuda")
    assert f.plan(m)[0] == "mma"
    y = f(x)
    ref = x.half().double().cpu().numpy() @ q.dequantize().astype(np.float64).T
    assert y.shape == (m, n) and y.dtype == torch.float32
    assert np.abs(y.double().cpu().numpy() - ref).max() <= 2e-3 * np.abs(ref).max()


@pytest.mark.parametrize("mt,producers,stages,staged", [(64, 0, 0, True), (128, 2, 0, True), (64, 1, 0, True),
                                                         (128, 1, 0, True), (128, 0, 0, False), (64, 0, 2, False)])
@pytest.mark.parametrize("split", [False, True])
def test_wgmma_epilogue_stages_the_tile_where_the_ring_holds_it(mt, producers, stages, staged, split):
    """Where the ring holds the float32 accumulator tile (MT x 128 x 4 bytes), the consumers write it to shared
    memory in pairs (32 pair stores each: 64 accumulators) between two block barriers and every thread writes it
    out, a warp per tile row, 4 columns per thread (MT x 32 pieces over the block), into y or the partial sums;
    otherwise (128 rows cooperative: 3 stages of 16 KB activations; 64 rows, 2 stages) the 64 scalar stores per
    consumer of the MMA layout stay."""
    from lutc.codegen.cuda.build import cuda_source

    wg = mt // 64
    nt = (wg + producers) * 128
    body = cuda_source(_wgmma(mt=mt, cps=3 if split else 8, producers=producers, stages=stages,
                              y_dtype="float16")).split("main_kernel(")[-1]
    epilogue = body.split("lutc_wgmma_wait<0>()")[-1].split("lutc_arrive(")[0]
    if staged:
        assert epilogue.count("lutc_sts64f(") == 32 and epilogue.count("__syncthreads()") >= 2
        pieces = -(-mt * 32 // nt)
        assert epilogue.count("lutc_lds128f(") == epilogue.count("lutc_st4(") == pieces
        last = epilogue[epilogue.rindex("lutc_st4(", 0, epilogue.rindex("lutc_st4(")) + 1:]   # the last piece
        # three warpgroups: a thread's last piece (load and store) only where it is in the tile
        assert last.count(f"(((int)threadIdx.x) < {mt * 32 - (pieces - 1) * nt})") == (2 if mt * 32 % nt else 0)
        assert ("P_ptr" in epilogue) == split and ("Y_ptr" in epilogue) != split
    else:
        assert "lutc_sts64f(" not in epilogue and "lutc_st4(" not in epilogue
        stores = epilogue.count("P_ptr[" if split else "Y_ptr[")
        assert stores == 64, stores


@pytest.mark.parametrize("mt,x_dtype,split", [(64, "float16", False), (128, "float16", True), (64, "float32", True)])
def test_gemm_epilogue_stages_the_tile_in_the_activation_ring(mt, x_dtype, split):
    """The mma.sync GEMM's epilogue goes through the activation ring as the Hopper GEMM's does (epilogue.py): 16
    pair stores per 16-row activation tile and thread (4 weight tiles x rows g, g + 8) between two barriers, then MT
    x 32 four-column pieces over the 128 threads into y or the partial sums; the ring holds the tile at every
    default depth (128 float16 rows: 2 stages of 32 KB, the 64 KB tile exactly)."""
    from lutc.codegen.cuda.build import cuda_source
    from lutc.codegen.cuda.epilogue import tile_bytes
    from lutc.codegen.cuda.gemm import default_stages, stage_bytes

    assert all(default_stages(t, x, b) * t * 128 * (2 if x == "float16" else 4) >= tile_bytes(t)
               for t in (64, 128) for x in ("float16", "float32") for b in (1, 2, 3, 4))
    assert stage_bytes(128, "float16", 2) > tile_bytes(128) // 2   # (so the tile does not fit one stage's rows)
    body = cuda_source(_gemm("sm_90a", mt=mt, x_dtype=x_dtype, k=2000, chunks=16, cps=8 if split else 16,
                             y_dtype="float16")).split("main_kernel(")[-1]
    epilogue = body.split("lutc_smem_addr(")[-1].split("lutc_arrive(")[0]
    assert epilogue.count("lutc_sts64f(") == (mt // 16) * 8 and epilogue.count("__syncthreads()") >= 2
    assert epilogue.count("lutc_lds128f(") == epilogue.count("lutc_st4(") == mt // 4
    assert ("P_ptr" in epilogue) == split and ("Y_ptr" in epilogue) != split
    before_sums = body.split("lutc_arrive(")[0]   # no scalar stores left: y and P only as lutc_st4's addresses
    assert all(before_sums.count(f"{b}_ptr[") == before_sums.count(f"(&({b}_ptr[") for b in "YP")
    with pytest.raises(ValueError, match="at least 2 stages"):
        cuda_source(_gemm("sm_90a", stages=1))
