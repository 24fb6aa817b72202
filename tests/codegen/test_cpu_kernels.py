"""CPU LUT kernels (AVX-512, AVX2, portable, AMX) against the numpy LUT reference (or the numpy twin of the AMX
kernel's int8 activations) and the float64 dequantized matmul, on awkward shapes; and their input checks."""
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lutc
from lutc.codegen.cpu.build import PARALLEL_PREP_ROWS, build_library
from lutc.codegen.cpu.isa import ISAS, host_arch, supported
from lutc.codegen.cpu.kernel import int8_applies, kernel_params, library_params
from lutc.codegen.cpu.layout import kernel_zero_points, pack_cpu
from lutc.codegen.cpu.schedule import INT8_KERNELS, bucket_of, default_int8, default_schedule
from lutc.passes.quantize import LayerQuant
from lutc.passes.quantize.weight import QuantizedWeight
from lutc.runtime import isa as runtime_isa
from lutc.runtime.isa import INT8_KERNEL_ISA, int8_kernels, kernel_usable
from lutc.runtime.lut import LutKernel
from twins import amx_reference, cpu_weight, real_zero_weight, rel
from twins import lut_reference as reference

ISA_LIST = [i for i in ISAS if supported(i)]
RNG = np.random.default_rng(11)
INT8_PARAMS = [pytest.param(k, marks=pytest.mark.skipif(not kernel_usable(k), reason=f"this CPU (or OS) cannot run the "
                                                        f"{k} kernel")) for k in INT8_KERNELS]




@pytest.mark.parametrize("isa", ISA_LIST)
@pytest.mark.parametrize("bits", [1, 2, 3, 4, "ternary", 8])
@pytest.mark.parametrize("n, k, group, m, sym", [(100, 300, 64, 1, False), (65, 1000, 128, 3, True),
                                                  (130, 257, 32, 17, False), (64, 512, 256, 2, False),
                                                  # one row over 5 or 11 tiles: the GEMV reads up to 4 tiles in one
                                                  # pass (t, t + q, t + 2q, t + 3q), then pairs and single ones of
                                                  # what is left, per thread
                                                  (317, 200, 32, 1, True), (699, 200, 32, 1, False)])
def test_kernel_matches_reference(isa, bits, n, k, group, m, sym):
    if bits == "ternary" and sym:
        sym = False
    q = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group, symmetric=sym))
    x = RNG.standard_normal((m, k)).astype(np.float32)
    lut, exact = reference(q, x)
    for threads in (1, 2):
        kern = lutc.kernels.build_lut_matmul(q, threads=threads, isa=isa)
        y = kern(x)
        assert y.shape == (m, n) and y.dtype == np.float32
        # same tables (or int8 activations), same integer sums: only the float rescaling order differs (f32 vs f64)
        twin = amx_reference(q, x) if kern.params["schedule"][bucket_of(m)]["kernel"] in INT8_KERNELS else lut
        if kern.params["table"] == "f32":   # (8 bits in a SIMD library: float tables, library_table)
            twin = exact
        assert rel(y, twin) < 2e-6 + offset_rounding(q, x, twin)
        # int8 tables: ~1e-2 relative against the exact dequantized matmul (design.md section 2)
        assert rel(y, exact) < 2e-2


def offset_rounding(q, x, ref) -> float:
    """The float16 rounding of the real-valued zero points' offsets (layout.py), relative to max |ref|: 0 where the
    zero points fit int8; 8-bit asymmetric weights clip z' to +-127 and the offset -s/2 (z' - z_i') carries the rest,
    up to 64 s, rounded to 2^-11 of itself."""
    from lutc.codegen.cpu.layout import kernel_zero_points

    _, off = kernel_zero_points(q)
    if off is None:
        return 0.0
    gs = q.group_size
    xp = np.zeros((x.shape[0], off.shape[1] * gs))
    xp[:, :x.shape[1]] = x
    xsum = np.abs(xp.reshape(x.shape[0], off.shape[1], gs).sum(-1))       # [m, groups]
    return float(2.0 ** -11 * (xsum @ np.abs(off).T).max() / np.abs(ref).max())


def test_wide_weights_take_float_tables_in_simd_libraries():
    """8-bit weights (GGUF Q8_0) with int8 tables: the SIMD int8-table GEMVs read at most two pairs of planes per run,
    so SIMD libraries build float tables for them (kernel.library_table; the portable one keeps int8 tables); a SIMD
    int8-table library built for them anyway refuses the call (it read an 8-bit tile as a 1-bit one: wrong sums,
    reads past the tile, a segfault when that memory was unmapped)."""
    from lutc.codegen.cpu.kernel import library_table

    q = lutc.quantize_weight(RNG.standard_normal((130, 256)), LayerQuant(bits=8, group_size=64))
    for isa in ISA_LIST:
        params = lutc.kernels.build_lut_matmul(q, isa=isa).params
        assert params["isa"] == isa and params["table"] == ("int8" if isa == "generic" else "f32")
        assert library_table("int8", 4, isa) == "int8" and library_table("f32", 8, isa) == "f32"
    simd = [i for i in ISA_LIST if i != "generic"]
    if simd:
        cw = pack_cpu(q)
        params = dict(kernel_params(cw, 1, "generic"), isa=simd[0])
        kern = LutKernel(build_library(library_params(params)), params, cw.w, cw.scales, cw.zeros)
        with pytest.raises(RuntimeError, match="returned an error"):
            kern(RNG.standard_normal((1, 256)).astype(np.float32))


def int8_kernel(kind, q, threads, **knobs):
    """A library whose buckets of 9 rows and more run the int8 kernel ``kind`` with ``knobs`` (split, mblock)."""
    cw, isa = pack_cpu(q), INT8_KERNEL_ISA[kind]
    sched = default_schedule(isa, "int8", threads, kind)
    sched[2:] = [dict(b, **knobs) for b in sched[2:]]
    params = kernel_params(cw, threads, isa, schedule=sched)
    return LutKernel(build_library(library_params(params)), params, cw.w, cw.scales, cw.zeros)


@pytest.mark.parametrize("kind", INT8_PARAMS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4, "ternary"])
@pytest.mark.parametrize("n, k, group, sym", [(130, 257, 32, False), (64, 512, 256, True), (317, 200, 16, False),
                                              (70, 1000, 128, True), (200, 300, 64, False)])
def test_int8_kernels_match_their_twin(kind, bits, n, k, group, sym):
    """The AMX, VNNI and AVX2 kernels compute the same integer sums (tests/twins.py; madd's sum_k xq q - z sum xq
    is the same number). Every width, group sizes 16..256 (AMX K steps of 16, 32 and 64; madd's int16 segments: one
    per group at W2 g128, several at W3/W4 and g256), K not a multiple of the group, N over partial tiles; row
    counts around the 16-row tiles, 32-row blocks, VNNI's 4-row and madd's 2-row passes (odd counts: a 1-row pass);
    N tiles or rows over 1 and 2 threads, row blocks."""
    q = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group,
                                                                    symmetric=sym and bits != "ternary"))
    assert int8_applies(pack_cpu(q), INT8_KERNEL_ISA[kind], "int8")
    kernels = [int8_kernel(kind, q, 1), int8_kernel(kind, q, 2), int8_kernel(kind, q, 2, split="m"),
               int8_kernel(kind, q, 2, mblock=20)]
    for m in (9, 16, 17, 33, 50):
        x = RNG.standard_normal((m, k)).astype(np.float32) * RNG.uniform(0.1, 10, (m, 1)).astype(np.float32)
        twin, exact = amx_reference(q, x), x.astype(np.float64) @ q.dequantize().astype(np.float64).T
        for kern in kernels:
            y = kern(x)
            assert y.shape == (m, n) and y.dtype == np.float32
            assert rel(y, twin) < 2e-6, (m, kern.params["schedule"][2])  # integer sums exact; f32 rescaling
            # int8 activations per group of K: like int8 tables, ~1e-2 against the dequantized matmul
            assert rel(y, exact) < 2e-2


def built_tables(kern, x):
    """Copies of what ``kern(x)`` left in its workspace: the tables, table scales and group sums."""
    kern(x)
    return [b.copy() for b in kern._workspace(x.shape[0])[0][1:4]]


def assert_same_as_portable(built):
    """``built``: ISA -> built_tables(...); each ISA's equal the portable build's, bit for bit."""
    for isa, bufs in built.items():
        for got, want, what in zip(bufs, built["generic"], ("tables", "table scales", "group sums")):
            np.testing.assert_array_equal(got, want, err_msg=f"{isa} {what}")


@pytest.mark.parametrize("k, group", [(300, 64), (257, 32), (1000, 128), (200, 16), (520, 256), (4096, 128),
                                      (1536, 48)])
def test_every_isa_builds_the_same_tables(k, group):
    """The vector table builds (AVX-512: 16 runs at a time, AVX2: 8) against the portable one: the same float
    operations in the same order, so the same tables, table scales and group sums, bit for bit; groups of 4-64
    runs (whole vectors and a remainder: 48 K is 12 runs), K inside a group (the padded tail group is built by the
    scalar path everywhere)."""
    q = lutc.quantize_weight(RNG.standard_normal((70, k)), LayerQuant(bits=2, group_size=group))
    x = (RNG.standard_normal((3, k)) * RNG.uniform(0.1, 10, (3, 1))).astype(np.float32)
    built = {}
    for isa in ISA_LIST:
        kern = lutc.kernels.build_lut_matmul(q, m=3, threads=1, isa=isa)
        if kern.params["schedule"][bucket_of(3)]["kernel"] != "lut":
            continue   # an int8 kernel quantizes the activations instead
        built[isa] = built_tables(kern, x)
    assert "generic" in built
    assert_same_as_portable(built)


def test_every_isa_builds_the_same_tables_after_swiglu():
    """The SwiGLU prologue is elementwise, so vectorized (every ISA) and scalar code give the same silu(g) * u and
    the same tables, bit for bit (the RMSNorm prologue sums in as many lanes as the ISA has: not compared)."""
    k = 1000
    q = lutc.quantize_weight(RNG.standard_normal((70, k)), LayerQuant(bits=2, group_size=32))
    cw = pack_cpu(q)
    gu = (RNG.standard_normal((3, 2 * k)) * 4).astype(np.float32)
    gu[0, :40] = [0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 100.0, -100.0] * 5   # silu's tails, signed zeros
    built = {}
    for isa in ISA_LIST:
        params = kernel_params(cw, 1, isa, prologue="swiglu", schedule=default_schedule(isa, "int8", 1))
        kern = LutKernel(build_library(library_params(params)), params, cw.w, cw.scales, cw.zeros)
        built[isa] = built_tables(kern, gu)
    assert_same_as_portable(built)


@pytest.mark.parametrize("isa", ISA_LIST)
def test_fused_prologues_feed_the_kernel(isa):
    """The RMSNorm and SwiGLU prologues feed the tables (or the AMX kernel's int8 activations, where the default
    schedule takes it); past PARALLEL_PREP_ROWS rows they run on every thread, each task with its own scratch row."""
    k = 1000  # wide enough that the tasks' rows overlap in time (a shared scratch row would be overwritten)
    q = lutc.quantize_weight(RNG.standard_normal((70, k)), LayerQuant(bits=2, group_size=32))
    cw = pack_cpu(q)
    nw = RNG.uniform(0.5, 1.5, k).astype(np.float32)
    for m in (3, PARALLEL_PREP_ROWS + 1, 150):
        x = RNG.standard_normal((m, k)).astype(np.float32)
        gu = RNG.standard_normal((m, 2 * k)).astype(np.float32)
        normed = x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5) * nw
        silu = gu[:, :k] / (1 + np.exp(-gu[:, :k].astype(np.float64))) * gu[:, k:]
        for threads in (1, 2):
            for prologue, extra, inp, act in (("rms_norm", {"eps": 1e-5}, x, normed), ("swiglu", {}, gu, silu)):
                params = kernel_params(cw, threads, isa, prologue=prologue, **extra)
                kern = LutKernel(build_library(library_params(params)), params, cw.w, cw.scales, cw.zeros,
                                 nw if prologue == "rms_norm" else None)
                a32 = act.astype(np.float32)
                amx = params["schedule"][bucket_of(m)]["kernel"] in INT8_KERNELS
                twin = amx_reference(q, a32) if amx else reference(q, a32)[0]
                # the prologue rounds in float32 in another order than numpy: now and then a row's table entry
                # (or int8 activation) sits at a rounding tie and moves by one step (~5e-4 of the output's range
                # here); every other row matches as the kernels do (2e-6)
                err = np.abs(kern(inp) - twin).max(-1) / np.abs(twin).max()
                assert np.median(err) < 2e-6 and err.max() < 2e-3, (m, threads, prologue, np.sort(err)[-3:])


def test_int8_kernels_are_chosen_only_where_they_apply(monkeypatch):
    w = RNG.standard_normal((64, 256))
    q = lutc.quantize_weight(w, LayerQuant(bits=4, group_size=64))
    cw = pack_cpu(q)
    kinds = [b["kernel"] for b in kernel_params(cw, 2, "avx512")["schedule"]]
    best = default_int8(int8_kernels("avx512"), 4) or "lut"  # AMX where the host has it, else VNNI (from W3), else lookups
    assert kinds == ["lut", "lut", best, best]
    w2 = [b["kernel"] for b in kernel_params(pack_cpu(lutc.quantize_weight(w, LayerQuant(bits=2, group_size=64))), 2,
                                             "avx512")["schedule"]]
    assert w2[2:] == [default_int8(int8_kernels("avx512"), 2, b) or "lut" for b in (2, 3)]
    # VNNI: W3/W4 from 9 rows, W2 from 33, W1 never; AMX: every width from 9 rows; nothing below 9 rows
    assert [default_int8(("vnni",), bits, 2) for bits in (1, 2, 3)] == [None, None, "vnni"]
    assert [default_int8(("vnni",), bits, 3) for bits in (1, 2, 3)] == [None, "vnni", "vnni"]
    assert default_int8(("amx", "vnni"), 1, 2) == "amx" and default_int8(("amx",), 4, 1) is None
    # madd (AVX2): W3/W4 from 33 rows only
    assert [default_int8(("madd",), bits, b) for bits in (2, 3, 4) for b in (2, 3)] == [None, None, None, "madd",
                                                                                        None, "madd"]
    for isa in ("neon", "generic"):
        assert not int8_applies(cw, isa, "int8")
    assert not int8_applies(cw, "avx512", "f32")  # float tables: the exact mode stays exact
    assert not int8_applies(pack_cpu(lutc.quantize_weight(w, LayerQuant(bits=2, group_size=8))), "avx512", "int8")
    cw.zeros[0, 0, 0] = 120  # q' - z' would leave int8 ...
    assert not int8_applies(cw, "avx512", "int8")
    assert int8_applies(cw, "avx2", "int8")  # ... madd unpacks q, the zero point goes through the activations' sums
    assert [b["kernel"] for b in lutc.kernels.build_lut_matmul(q, kind="lut").params["schedule"]] == ["lut"] * 4
    with pytest.raises(ValueError, match="kind must be one of"):
        lutc.kernels.build_lut_matmul(q, kind="avx")
    with pytest.raises(ValueError, match="pass one of them"):
        lutc.kernels.build_lut_matmul(q, kind="amx", tune=True)
    g8 = lutc.quantize_weight(w, LayerQuant(bits=2, group_size=8))
    for kind in INT8_KERNELS:
        isa, other = INT8_KERNEL_ISA[kind], "avx2" if INT8_KERNEL_ISA[kind] == "avx512" else "avx512"
        if supported(isa):
            with pytest.raises(ValueError, match=f"the {kind} kernel takes"):
                lutc.kernels.build_lut_matmul(g8, kind=kind, isa=isa)
        if supported(other):  # another ISA's library does not hold it
            with pytest.raises(ValueError, match=f"the {kind} kernel is in {isa} libraries"):
                lutc.kernels.build_lut_matmul(q, kind=kind, isa=other)
        with pytest.raises(ValueError, match=f"the {kind} kernel is in {isa} libraries"):
            kernel_params(pack_cpu(q), 2, other, schedule=default_schedule(other, "int8", 2, kind))
        sched = default_schedule(isa, "int8", 2, kind)
        with pytest.raises(ValueError, match="only AVX-512 and AVX2 libraries with int8 tables"):
            kernel_params(pack_cpu(g8), 2, isa, schedule=sched)
        sched[1] = dict(sched[1], kernel=kind)
        with pytest.raises(ValueError, match=f"bucket 2-8: the {kind} kernel runs buckets of 9 rows and more"):
            kernel_params(pack_cpu(q), 2, isa, schedule=sched)
    # a library with int8-kernel buckets on a host (or OS) without them: refused before any of their instructions run
    monkeypatch.setattr("lutc.runtime.lut.kernel_usable", lambda kernel: kernel == "lut")
    for kind, what in (("amx", "Intel AMX tile instructions"), ("vnni", "AVX-512 VNNI instructions"), ("madd", "AVX2")):
        isa = INT8_KERNEL_ISA[kind]
        params = kernel_params(pack_cpu(q), 2, isa, schedule=default_schedule(isa, "int8", 2, kind))
        with pytest.raises(RuntimeError, match=what):
            LutKernel("unused.so", params, cw.w, cw.scales, cw.zeros)


def test_int8_kernel_detection_needs_the_flags_and_the_os(monkeypatch):
    runtime_isa.amx_usable.cache_clear()
    try:
        monkeypatch.setattr(runtime_isa, "cpu_flags", lambda: frozenset({"avx512f", "avx512bw", "avx512vl", "f16c"}))
        assert not runtime_isa.amx_usable()  # AVX-512 without amx_tile / amx_int8
        assert not runtime_isa.vnni_usable() and runtime_isa.int8_kernels() == ()  # ... and without avx512_vnni
        monkeypatch.setattr(runtime_isa, "cpu_flags", lambda: frozenset({"avx512f", "avx512bw", "avx512vl", "f16c",
                                                                          "avx512_vnni"}))
        assert runtime_isa.int8_kernels() == ("vnni",) and runtime_isa.kernel_usable("vnni")
        assert "int8 kernels for many rows: vnni" in runtime_isa.describe_host()  # what bench reports print
        monkeypatch.setattr(runtime_isa, "cpu_flags", lambda: frozenset({"avx", "avx2", "fma", "f16c"}))
        assert runtime_isa.int8_kernels() == ("madd",) and runtime_isa.int8_kernels("avx512") == ()
        assert runtime_isa.int8_kernels("avx2") == ("madd",) and not runtime_isa.kernel_usable("vnni")
    finally:
        runtime_isa.amx_usable.cache_clear()


def test_inputs_are_checked_or_copied():
    q = lutc.quantize_weight(RNG.standard_normal((70, 96)), LayerQuant(bits=2, group_size=32))
    kern = lutc.kernels.build_lut_matmul(q, threads=1)
    x = RNG.standard_normal((4, 96)).astype(np.float32)
    want = kern(x)
    with pytest.raises(TypeError, match="float activations"):
        kern(x.astype(np.int32))
    with pytest.raises(ValueError, match=r"\[..., 96\]"):
        kern(x[:, :95])
    with pytest.raises(ValueError, match=r"\[..., 96\]"):
        kern(np.float32(3.0))
    big = np.zeros((4, 200), np.float32)
    big[:, ::2][:, :96] = x
    np.testing.assert_array_equal(kern(big[:, ::2][:, :96]), want)           # non-contiguous: copied
    raw = np.zeros(4 * 96 + 1, np.float32)
    unaligned = raw[1:].reshape(4, 96)
    unaligned[...] = x
    assert unaligned.ctypes.data % 64 != 0
    np.testing.assert_array_equal(kern(unaligned), want)                     # unaligned: copied
    np.testing.assert_array_equal(kern(torch.from_numpy(x)), want)           # torch in, numpy out
    np.testing.assert_allclose(kern(x.astype(np.float64)), want)             # other float dtypes: converted
    assert kern(x.reshape(2, 2, 96)).shape == (2, 2, 70)
    assert kern(np.zeros((0, 96), np.float32)).shape == (0, 70)


def test_residual_is_added_and_checked():
    """A fused residual add: residual + x @ W.T (float32 adds of the same values), any float dtype or torch."""
    q = lutc.quantize_weight(RNG.standard_normal((70, 96)), LayerQuant(bits=2, group_size=32))
    kern = lutc.kernels.build_lut_matmul(q, threads=1)
    x = RNG.standard_normal((2, 3, 96)).astype(np.float32)
    r = RNG.standard_normal((2, 3, 70)).astype(np.float32)
    got = kern(x, residual=r)
    assert got.shape == (2, 3, 70) and got.dtype == np.float32
    np.testing.assert_array_equal(got, kern(x) + r)
    np.testing.assert_array_equal(kern(x, residual=torch.from_numpy(r)), got)
    np.testing.assert_allclose(kern(x, residual=r.astype(np.float64)), got)
    out = np.empty((2, 3, 70), np.float32)
    assert kern(x, out=out, residual=r) is out
    np.testing.assert_array_equal(out, got)
    with pytest.raises(ValueError, match=r"residual must be \[2, 3, 70\], got \[2, 70\]"):
        kern(x, residual=r[:, 0])


@pytest.mark.parametrize("lead", [(1,), (1, 1), (3,), (2, 2)])
def test_bound_call_reads_its_arrays_at_each_call(lead):
    """LutKernel.bind (replayed decode steps): the call reads x and the residual as they are when it runs and
    overwrites the returned array; equal to the plain call for aligned and unaligned float32 and float64
    inputs, one row (a view of the kernel's buffer) and several (n = 70 is not a multiple of 64: compacted)."""
    from lutc.runtime.lut import aligned_empty

    q = lutc.quantize_weight(RNG.standard_normal((70, 96)), LayerQuant(bits=2, group_size=32))
    kern = lutc.kernels.build_lut_matmul(q, threads=1)
    aligned = aligned_empty(lead + (96,), np.float32)
    unaligned = np.empty(int(np.prod(lead)) * 96 + 1, np.float32)[1:].reshape(lead + (96,))
    for x in (aligned, unaligned, np.empty(lead + (96,), np.float64)):
        r = np.empty(lead + (70,), np.float32)
        call, y = kern.bind(x)
        call_r, y_r = kern.bind(x, residual=r)
        for _ in range(2):
            x[...] = RNG.standard_normal(x.shape)
            r[...] = RNG.standard_normal(r.shape)
            call()
            call_r()
            np.testing.assert_array_equal(y, kern(x))
            np.testing.assert_array_equal(y_r, kern(x, residual=r))
        assert y.shape == lead + (70,) and y_r.shape == y.shape
    with pytest.raises(ValueError, match=r"activations must be \[\.\.\., 96\]"):
        kern.bind(np.zeros((1, 95), np.float32))
    with pytest.raises(ValueError, match="residual must be"):
        kern.bind(aligned, residual=np.zeros((70,), np.float32))


def regrouped(q, g):
    """``q`` with explicit groups of ``g``: its scales and zero points repeated, K padded with zero codes."""
    kp = -(-q.k_pad // g) * g
    codes = np.zeros((q.n, kp), np.uint8)
    codes[:, :q.k_pad] = q.codes
    rep = kp // g if q.scales.shape[1] == 1 else q.group_size // g
    zeros = None if q.zeros is None else np.repeat(q.zeros, rep, axis=1)
    cfg = dataclasses.replace(q.config, group_size=g)
    return QuantizedWeight(codes, np.repeat(q.scales, rep, axis=1), zeros, cfg, q.k)


@pytest.mark.parametrize("bits, n, k, group, sym, g", [(2, 70, 1000, None, False, 128), ("ternary", 65, 2056, None, False, 128),
                                                      (4, 64, 1000, None, True, 128), (3, 130, 1024, 512, False, 256),
                                                      (2, 64, 2000, 1000, True, 200)])
def test_groups_above_256_run_as_sub_groups(bits, n, k, group, sym, g):
    """One scale per row (per-channel) and groups above the kernels' 256: the kernels see sub-groups of ``g`` with
    the group's scale repeated (the same weights), so the packed weight is that of the regrouped one, and the
    result is the dequantized matmul to the int8 tables' rounding (float tables: to float32 rounding)."""
    q = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group, symmetric=sym))
    same = regrouped(q, g)
    a, b = pack_cpu(q), pack_cpu(same)
    assert a.group_size == b.group_size == g and a.k_pad == b.k_pad
    for name in ("w", "scales", "zeros"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for m in (1, 5, 40):
        x = RNG.standard_normal((m, k)).astype(np.float32)
        lut, exact = reference(same, x)
        for threads in (1, 2):
            kern = lutc.kernels.build_lut_matmul(q, threads=threads)
            y = kern(x)
            twin = amx_reference(same, x) if kern.params["schedule"][bucket_of(m)]["kernel"] in INT8_KERNELS else lut
            assert rel(y, twin) < 2e-6 and rel(y, exact) < 2e-2
    qf = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group, symmetric=sym,
                                                                      table_dtype="f32"))
    x = RNG.standard_normal((3, k)).astype(np.float32)
    assert rel(lutc.kernels.build_lut_matmul(qf)(x), x.astype(np.float64) @ qf.dequantize().astype(np.float64).T) < 1e-5


@pytest.mark.parametrize("isa", ISA_LIST)
@pytest.mark.parametrize("bits, n, k, group", [(4, 100, 300, 32), (2, 130, 1000, 16), (3, 65, 640, 64),
                                               (1, 70, 257, 128), (4, 64, 1100, None)])
def test_real_valued_zero_points(isa, bits, n, k, group):
    """z = z_i + the rest: the kernels take z_i on the grid and add the f16 offset -s (z - z_i) times the group's
    activation sum. Against the twin built from exactly those weights (same tables or int8 activations:
    float32-vs-float64 rescaling only), and the float64 matmul of the true weights: int8 tables ~1e-2; float tables
    1e-5 to the kernel's weights and, to the true ones, what the f16 offsets moved them (bounded below)."""
    q = real_zero_weight(bits, n, k, group)
    cw = pack_cpu(q)
    twin_w = cpu_weight(regrouped(q, cw.group_size) if group is None else q)   # per row: the kernels' sub-groups
    assert cw.offsets and cw.scales.shape == (2 * cw.tiles, cw.scales.shape[1], 64)
    zi, o = kernel_zero_points(q)
    assert np.abs(zi).max() <= (1 << bits) - 1 and np.all(zi == np.round(zi))   # on the grid
    inside = (q.zeros >= 0) & (q.zeros <= (1 << bits) - 1)
    assert np.all(np.abs(o[inside]) <= q.scales.astype(np.float64)[inside] / 2 + 1e-9)
    # each weight moves by the f16 rounding of its group's offset: at most 2^-11 |o| (2^-12 s inside the grid)
    moved = np.abs(twin_w.dequantize().astype(np.float64) - q.dequantize().astype(np.float64))
    limit = np.repeat(np.abs(o) * 2.0 ** -11, q.group_size, axis=1)[:, :k] + 1e-7   # + dequantize's float32
    assert moved.max() > 0 and np.all(moved <= limit)
    for m in (1, 5, 40):
        x = RNG.standard_normal((m, k)).astype(np.float32)
        lut = reference(twin_w, x)[0]
        exact = x.astype(np.float64) @ q.dequantize().astype(np.float64).T   # the true weights, not the twin's
        for threads in (1, 2):
            kern = lutc.kernels.build_lut_matmul(q, threads=threads, isa=isa)
            y = kern(x)
            assert kern.params["offsets"]
            twin = amx_reference(twin_w, x) if kern.params["schedule"][bucket_of(m)]["kernel"] in INT8_KERNELS else lut
            assert rel(y, twin) < 2e-6 and rel(y, exact) < 2e-2
    qf = dataclasses.replace(q, config=dataclasses.replace(q.config, table_dtype="f32"))
    x = RNG.standard_normal((3, k)).astype(np.float32)
    y = lutc.kernels.build_lut_matmul(qf, isa=isa)(x)
    assert rel(y, x.astype(np.float64) @ twin_w.dequantize().astype(np.float64).T) < 1e-5
    bound = np.abs(x.astype(np.float64)) @ moved.T   # the offsets' f16 rounding, per output
    assert np.all(np.abs(y - x.astype(np.float64) @ q.dequantize().astype(np.float64).T) <= bound + 1e-5 * np.abs(y).max())


def test_integer_zero_points_need_no_offsets():
    """The quantizer's zero points (and ONNX MatMulNBits') are integers on the grid: no offsets, no extra bytes."""
    q = lutc.quantize_weight(RNG.standard_normal((64, 256)), LayerQuant(bits=3, group_size=32))
    cw = pack_cpu(q)
    assert not cw.offsets and cw.scales.shape[0] == cw.tiles
    assert "offsets" not in kernel_params(cw, 1, "generic")


def test_unsupported_configurations_say_so():
    w = RNG.standard_normal((64, 512))
    odd = QuantizedWeight(np.zeros((64, 516), np.uint8), np.ones((64, 2), np.float16), None, LayerQuant(), 516)
    with pytest.raises(NotImplementedError, match="multiples of 4 .* got 258"):   # (quantize_weight makes 8 k)
        lutc.kernels.build_lut_matmul(odd)
    with pytest.raises(TypeError, match="QuantizedWeight"):
        lutc.kernels.build_lut_matmul(w)
    with pytest.raises(NotImplementedError, match="target 'tpu'"):
        lutc.kernels.build_lut_matmul(lutc.quantize_weight(w, LayerQuant()), target="tpu")


def unpack_cpu(cw) -> np.ndarray:
    """Codes [N, K_pad] back from layout x86-g4-n64-v2 (codegen/cpu/layout.py), written out independently."""
    runs, full = cw.k_pad // 4, cw.bits // 2
    codes = np.zeros((cw.tiles * 64, cw.k_pad), np.int64)
    for t in range(cw.tiles):
        tile = cw.w[t]
        planes = []
        if full:
            lines = tile[:runs * full * 64].reshape(runs, full, 32, 2)      # [run, pair, i, q]
            for p in range(full):
                for q in range(2):
                    b = lines[:, p, :, q].T                                  # [i, run]
                    planes.append(np.concatenate([b & 15, b >> 4]))           # rows 0-31, 32-63
        if cw.bits % 2:
            b = tile[runs * full * 64:].reshape(runs, 32).T
            planes.append(np.concatenate([b & 15, b >> 4]))
        for bit, idx in enumerate(planes):                                    # idx [64 rows, runs]: 4 k each
            for j in range(4):
                codes[t * 64:(t + 1) * 64, j::4] += ((idx.astype(np.int64) >> j) & 1) << bit
    return codes[:cw.n]


@settings(max_examples=25, deadline=None)
@given(bits=st.sampled_from([1, 2, 3, 4]), n=st.integers(1, 150), runs=st.integers(1, 20), seed=st.integers(0, 99))
def test_cpu_layout_round_trips(bits, n, runs, seed):
    """Every code comes back from the packed tiles (odd widths: the half lines), padding rows stay zero."""
    k = 8 * runs  # groups are multiples of 8
    q = lutc.quantize_weight(np.random.default_rng(seed).standard_normal((n, k)), LayerQuant(bits=bits, group_size=k))
    runs = k // 4
    cw = pack_cpu(q)
    assert cw.w.shape == (-(-n // 64), runs * ((bits // 2) * 64 + (bits % 2) * 32))
    np.testing.assert_array_equal(unpack_cpu(cw), q.codes)


def test_runtime_refuses_an_unknown_layout():
    q = lutc.quantize_weight(RNG.standard_normal((64, 64)), LayerQuant(bits=3, group_size=32))
    cw = pack_cpu(q)
    params = dict(kernel_params(cw, 1, "generic"), layout="x86-g4-n64-v9")
    with pytest.raises(ValueError, match="layout 'x86-g4-n64-v9'"):
        LutKernel("unused.so", params, cw.w, cw.scales, cw.zeros)
    with pytest.raises(ValueError, match=r"LUT kernel w: expected uint8"):  # v1 params want v1's 4-D weights
        LutKernel("unused.so", dict(params, layout="x86-g4-n64-v1", pairs=2), cw.w, cw.scales, cw.zeros)


@pytest.mark.parametrize("kind", INT8_KERNELS)
def test_int8_libraries_link_their_kernels_on_any_x86_host(kind):
    """Every int8 kernel's library builds on this host, whatever it runs (an AVX2 host builds AVX-512 libraries for
    artifacts that move): the driver's C entry points (the quantizer, the kernel) are defined in the library, so a
    renamed or misplaced symbol shows here rather than as a failed load on the machine that has the instructions."""
    import shutil
    import subprocess

    if host_arch() != "x86_64" or not shutil.which("nm"):
        pytest.skip("x86 libraries, inspected with binutils' nm")
    isa = INT8_KERNEL_ISA[kind]
    q = lutc.quantize_weight(RNG.standard_normal((70, 256)), LayerQuant(bits=4, group_size=64))
    lib = build_library(library_params(kernel_params(pack_cpu(q), 2, isa, schedule=default_schedule(isa, "int8", 2,
                                                                                                     kind))))
    nm = lambda *flags: subprocess.run(["nm", "-D", *flags, str(lib)], capture_output=True, text=True,
                                       check=True).stdout
    assert not [line for line in nm("--undefined-only").splitlines() if "lutc_" in line]
    defined = nm("--defined-only")
    assert f"lutc_{kind}_gemm_{isa}" in defined and f"lutc_int8_quantize_{isa}" in defined
