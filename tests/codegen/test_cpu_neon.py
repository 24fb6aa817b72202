"""aarch64 NEON micro-kernels (lut_kernels.c, LUTC_ISA=128), cross-compiled here and run under qemu-user against the
numpy LUT reference and the float64 dequantized matmul; and the cross-built NEON libraries (TVM driver + kernels).
Needs Debian's gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user (.ci/run installs them)."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import lutc
from lutc.codegen.cpu.build import HERE, build_library
from lutc.codegen.cpu.isa import GCC_FLAGS, c_compiler, llvm_target, supported
from lutc.codegen.cpu.kernel import check_isa, kernel_params, library_params
from lutc.codegen.cpu.layout import pack_cpu
from lutc.codegen.cpu.ops import build_ops_library
from lutc.passes.quantize import LayerQuant
from twins import lut_reference as reference
from twins import rel

CROSS, QEMU = "aarch64-linux-gnu-gcc", "qemu-aarch64"
needs_cross = pytest.mark.skipif(shutil.which(CROSS) is None, reason=f"no {CROSS} (apt install gcc-aarch64-linux-gnu "
                                                                      "libc6-dev-arm64-cross)")
needs_qemu = pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"no {QEMU} (apt install qemu-user)")
RNG = np.random.default_rng(23)
EM_AARCH64 = 183  # ELF e_machine


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """tests/codegen/lut_harness.c linked with the NEON build of lut_kernels.c, a static aarch64 executable."""
    exe = tmp_path_factory.mktemp("neon") / "lut_harness"
    cmd = [CROSS, "-O3", "-static", "-std=c11", f"-I{HERE}", *GCC_FLAGS["neon"], "-DHARNESS_SYM=neon",
           str(HERE / "lut_kernels.c"), str(Path(__file__).with_name("lut_harness.c")), "-lm", "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


def run_neon(harness, tmp_path, q, x, nw, row_block):
    cw = pack_cpu(q)
    m, n_pad = x.shape[0], cw.tiles * 64
    header = np.array([m, q.k, cw.k_pad, q.group_size, n_pad, cw.bits, cw.w.shape[1], row_block], np.int64)
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    inp.write_bytes(b"".join(a.tobytes() for a in (header, x, cw.w, cw.scales, cw.zeros, nw)))
    r = subprocess.run([QEMU, str(harness), str(inp), str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    y = np.fromfile(out, np.float32).reshape(2, m, n_pad)[:, :, :q.n]
    return y[0], y[1]


@needs_cross
@needs_qemu
@pytest.mark.parametrize("bits", [1, 2, 3, 4, "ternary"])
@pytest.mark.parametrize("n, k, group, m, sym", [(100, 300, 64, 1, False), (65, 1000, 128, 3, True),
                                                  (130, 257, 32, 5, False), (200, 512, 256, 2, False),
                                                  (317, 200, 16, 1, True)])
def test_neon_kernels_match_reference(harness, tmp_path, bits, n, k, group, m, sym):
    """Every width (one or two pairs of planes, with and without a half line), K not a multiple of the group or of
    64, N over partial tiles, tiles split over two calls, rows in blocks; the RMSNorm prologue's NEON sum of
    squares feeds the tables."""
    q = lutc.quantize_weight(RNG.standard_normal((n, k)), LayerQuant(bits=bits, group_size=group,
                                                                    symmetric=sym and bits != "ternary"))
    x = (RNG.standard_normal((m, k)) * RNG.uniform(0.1, 10, (m, 1))).astype(np.float32)
    nw = RNG.uniform(0.5, 1.5, k).astype(np.float32)
    for row_block in (0, 2):
        y, y_norm = run_neon(harness, tmp_path, q, x, nw, row_block)
        lut, exact = reference(q, x)
        # same int8 tables, same integer sums as the reference: only the float rescaling order differs
        assert rel(y, lut) < 2e-6
        assert rel(y, exact) < 2e-2  # int8 tables: ~1e-2 relative (design.md section 2)
        normed = (x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5) * nw).astype(np.float32)
        lut_n, exact_n = reference(q, normed)
        # the NEON sum of squares rounds in another order than numpy: a table entry at a rounding tie may move by
        # one step (~5e-4 of the output's range, as on x86: test_fused_prologues_feed_the_kernel)
        assert rel(y_norm, lut_n) < 2e-3 and rel(y_norm, exact_n) < 2e-2


def elf_machine(path) -> int:
    return int.from_bytes(Path(path).read_bytes()[18:20], "little")


@needs_cross
def test_neon_libraries_cross_compile():
    """The whole NEON LUT matmul library (TVM driver for aarch64 + micro-kernels) and the ops library build on this
    machine with the cross compiler: aarch64 shared objects exporting the NEON entry points."""
    q = lutc.quantize_weight(RNG.standard_normal((100, 300)), LayerQuant(bits=3, group_size=64))
    for prologue, extra in (("none", {}), ("rms_norm", {"eps": 1e-5}), ("swiglu", {})):
        params = kernel_params(pack_cpu(q), 2, "neon", prologue=prologue, **extra)
        assert all(b["kernel"] == "lut" for b in params["schedule"])  # no int8 kernels off x86
        lib = build_library(library_params(params))
        assert elf_machine(lib) == EM_AARCH64
        syms = subprocess.run(["aarch64-linux-gnu-nm", "-D", str(lib)], capture_output=True, text=True).stdout
        assert "lutc_gemv_neon" in syms and "lutc_precompute_neon" in syms and "__tvm_ffi_main" in syms
    assert elf_machine(build_ops_library("neon", 2)) == EM_AARCH64
    assert llvm_target("neon")["mtriple"] == "aarch64-linux-gnu" and c_compiler("neon") == CROSS


def test_neon_is_refused_off_aarch64(monkeypatch):
    """Off aarch64 the NEON kernels cannot run: the CPU target and the kernel API say so."""
    if supported("neon"):
        pytest.skip("this is an aarch64 machine")
    with pytest.raises(RuntimeError, match="cannot run the neon kernels"):
        check_isa("neon")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt install gcc-aarch64-linux-gnu"):
        c_compiler("neon")


@pytest.mark.parametrize("machine, best", [("aarch64", "neon"), ("arm64", "neon"), ("riscv64", "generic")])
def test_host_detection_off_x86(monkeypatch, machine, best):
    """On aarch64 (Linux's "aarch64", macOS's "arm64") the best ISA is NEON, which every AArch64 core has; the x86
    variants are never picked there, and any other machine gets the portable kernels."""
    import platform

    from lutc.runtime import isa

    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert isa.best_isa() == best
    assert not isa.supported("avx2", frozenset({"avx2", "fma", "f16c"}))
    assert isa.supported("generic")
