"""Build the CUDA LUT kernels: TVMScript (tir.py) -> ``tvm.compile`` for a CUDA target -> CUDA C source ->
``nvcc`` on this machine -> a fatbin embedded in the exported library, so the GPU machine needs no compiler.

The TVM wheel is built without the CUDA runtime, so ``tvm.compile`` returns a host module importing a
"cuda" module that carries CUDA *source* (format "cuda"); loading that would JIT through
``tvm_callback_cuda_compile`` on the GPU machine. Instead, when the library is exported, the serialized
import blob (``__tvm_ffi__library_bin``, format per module: ``[fmt][fmap][code]``) is rewritten so the CUDA
module holds the nvcc-built fatbin (format "fatbin"): ``libtvm_runtime_cuda.so`` loads it with
``cuModuleLoadData``, no compiler, no JIT. Libraries are cached on disk under ``$LUTC_CACHE/cuda`` by a content
hash of the kernel parameters, these sources and the nvcc version (no TVM needed to find a cached one).
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from ... import __version__
from .tir import KernelParams

HERE = Path(__file__).parent
ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90", "sm_90a")


class NvccNotFound(RuntimeError):
    pass


def cache_dir() -> Path:
    d = Path(os.environ.get("LUTC_CACHE", Path.home() / ".cache" / "lutc")) / "cuda"
    d.mkdir(parents=True, exist_ok=True)
    return d


def find_nvcc() -> str | None:
    exe = shutil.which("nvcc")
    if exe:
        return exe
    for c in (os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"):
        if c and Path(c, "bin", "nvcc").exists():
            return str(Path(c, "bin", "nvcc"))
    return None


@functools.lru_cache(maxsize=1)
def nvcc_version() -> str:
    nvcc = find_nvcc()
    if nvcc is None:
        return "none"
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


def key(p: KernelParams) -> str:
    h = hashlib.sha256()
    for f in ("tir.py", "mma.py", "gemm.py", "wgmma.py", "epilogue.py", "dq.py", "build.py", "layout.py"):
        h.update((HERE / f).read_bytes())
    h.update(repr(sorted(p.as_dict().items())).encode())
    h.update(__version__.encode())
    return h.hexdigest()[:20]


def library_path(p: KernelParams) -> Path:
    return cache_dir() / f"lut_cuda_{p.arch}_{key(p)}.so"


def prelude() -> str:
    """The device helpers the kernels call by name (call_extern): the split-K handoff, the float16 packing and
    dequantization, the asynchronous copies; prepended to what TVM generates."""
    from . import dq, epilogue, gemm, mma, wgmma

    return mma.PRELUDE + gemm.PRELUDE + wgmma.PRELUDE + epilogue.PRELUDE + dq.PRELUDE


def cuda_source(p: KernelParams) -> str:
    """The CUDA C source nvcc compiles for ``p``: the helpers (``prelude()``) and what TVM generates (one
    __global__ function per launch)."""
    return prelude() + _compile_tvm(p).mod.imports[0].inspect_source()


def _compile_tvm(p: KernelParams):
    import tvm

    from .dq import dq_gemv_func
    from .gemm import gemm_func
    from .mma import mma_matmul_func
    from .tir import lut_matmul_func
    from .wgmma import wgmma_func

    funcs = {"lut": lut_matmul_func, "mma": mma_matmul_func, "gemm": gemm_func, "wgmma": wgmma_func,
             "dq": dq_gemv_func}
    if p.kind not in funcs:
        raise ValueError(f"unknown CUDA LUT kernel kind {p.kind!r}; known: {sorted(funcs)}")
    target = tvm.target.Target({"kind": "cuda", "arch": p.arch}, host={"kind": "llvm"})
    return tvm.compile(tvm.IRModule({"main": funcs[p.kind](p)}), target=target,
                       tir_pipeline=pdl_pipeline() if p.pdl else "default")


PDL_TAG = "tirx.use_programtic_dependent_launch"   # (TVM's spelling) a launch tag: cuLaunchKernelEx with
DYN_SHARED_TAG = "tirx.use_dyn_shared_memory"      # programmatic stream serialization; the last tag, if present


@functools.lru_cache(maxsize=None)
def pdl_pipeline(wait_at_entry: bool = False) -> str:
    """The name of a TIR pipeline that is TVM's default plus the PDL launch tag on every kernel (TVM computes the
    launch tags in its pipeline: a function attribute set before it is not read, so the tag is added after it).
    ``wait_at_entry``: every kernel also starts with ``lutc_grid_wait()`` (for kernels that read their
    predecessor's results at once, the ops: launched early, they only save the launch latency); the dp4a GEMV
    places its own wait."""
    import tvm
    from tvm import tirx

    name = "lutc_pdl_entry" if wait_at_entry else "lutc_pdl"

    def factory():
        pipeline, finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("default")

        @tvm.transform.module_pass(opt_level=0, name="lutc.AddPdlLaunch")
        def with_pdl(mod, _ctx):
            mod = pipeline(mod)
            for gv, f in list(mod.functions.items()):
                tags = f.attrs.get("tirx.kernel_launch_params") if f.attrs else None
                if tags is None:   # host functions
                    continue
                tags = [str(t) for t in tags]
                at = len(tags) - (tags[-1:] == [DYN_SHARED_TAG])
                f = f.with_attr("tirx.kernel_launch_params", tags[:at] + [PDL_TAG] + tags[at:])
                if wait_at_entry:
                    f = f.with_body(tirx.SeqStmt([tirx.Evaluate(tirx.call_extern("void", "lutc_grid_wait")), f.body]))
                mod[gv] = f
            return mod

        return with_pdl, finalize_host, finalize_device

    tvm.tirx.register_tir_pipeline(name, factory)
    return name


def nvcc_compile(source: str, arch: str, fmt: str = "fatbin", extra=()) -> bytes:
    """Compile CUDA source with nvcc to ``fmt`` ("fatbin", "cubin" or "ptx") for ``arch`` (e.g. "sm_90a")."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise NvccNotFound("nvcc (the CUDA compiler) is not installed here: the CUDA kernels are compiled to "
                           "fatbin at build time; install the CUDA toolkit or build on a machine that has it")
    if arch not in ARCHS:
        raise ValueError(f"unsupported CUDA arch {arch!r}; choose one of {ARCHS}")
    cc = arch[3:]
    with tempfile.TemporaryDirectory() as d:
        src, out = Path(d, "k.cu"), Path(d, f"k.{fmt}")
        src.write_text(source)
        gencode = ([f"-arch=compute_{cc}"] if fmt == "ptx"
                   else ["-gencode", f"arch=compute_{cc},code=[sm_{cc},compute_{cc}]"])
        cmd = [nvcc, "-O3", "-w", f"--{fmt}", *gencode, "-o", str(out), str(src), *extra]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"nvcc failed ({' '.join(cmd)}):\n{r.stderr[-4000:]}")
        return out.read_bytes()


# ---- rewriting the packed import blob: the CUDA module's source -> fatbin ----

def _read_str(b: bytes, o: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from("<Q", b, o)
    return b[o + 8:o + 8 + n], o + 8 + n


def _str(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def patch_library_bin(blob: bytes, source: str, fatbin: bytes) -> bytes:
    """``blob`` = [u64 size][import tree][modules: kind, payload]; replace the "cuda" module's payload
    ``[fmt="cuda"][fmap][source]`` by ``[fmt="fatbin"][fmap][fatbin]``."""
    (size,) = struct.unpack_from("<Q", blob, 0)
    if size != len(blob) - 8:
        raise RuntimeError("unexpected TVM import blob layout (size header)")
    code = _str(source.encode())
    marker = _str(b"cuda")
    at = blob.find(marker)
    while at >= 0:
        o = at + len(marker)
        (plen,) = struct.unpack_from("<Q", blob, o)
        payload = blob[o + 8:o + 8 + plen]
        if o + 8 + plen <= len(blob) and payload.startswith(marker) and payload.endswith(code):
            fmap = payload[len(marker):len(payload) - len(code)]
            new_payload = _str(b"fatbin") + fmap + _str(fatbin)
            out = blob[:o] + struct.pack("<Q", len(new_payload)) + new_payload + blob[o + 8 + plen:]
            return struct.pack("<Q", len(out) - 8) + out[8:]
        at = blob.find(marker, at + 1)
    raise RuntimeError("no CUDA module with the generated source found in TVM's import blob")


def _c_array(c: str, blob: bytes) -> str:
    """TVM's packed-imports C file ``c`` with its byte array replaced by ``blob`` (the file's declarations,
    which give the symbol external linkage when compiled as C++, are kept)."""
    head = c[:c.index("const unsigned char __tvm_ffi__library_bin[")]
    tail = c[c.rindex("};") + 2:]
    body = ",".join(f"0x{b:02x}" for b in blob)
    return f"{head}const unsigned char __tvm_ffi__library_bin[{len(blob)}] = {{{body}}};{tail}"


def _parse_c_array(c: str) -> bytes:
    body = c[c.index("= {") + 3:c.rindex("};")]
    return bytes(int(v, 16) for v in re.findall(r"0x[0-9a-fA-F]{2}", body))


def build_library(p: KernelParams) -> Path:
    """The path of a shared library whose ``main(x, w, scales, zeros, partials, y)`` runs the LUT matmul."""
    lib = library_path(p)
    if lib.exists():
        return lib
    try:
        from tvm.runtime import _ffi_api
    except ImportError as e:
        raise RuntimeError(f"the CUDA kernel library {lib.name} is not in the cache ({lib.parent}) and TVM is not "
                           "installed here to build it: build it where apache-tvm and nvcc are "
                           "(CudaLutMatmul.build(m), or python -m lutc.bench.gpu --prepare) and point LUTC_CACHE "
                           "at the result") from e

    return export_fatbin(_compile_tvm(p), p.arch, lib, extra=[f"-maxrregcount={p.maxreg}"] if p.maxreg else ())


def export_fatbin(exe, arch: str, lib: Path, extra=()) -> Path:
    """Export a TVM executable compiled for CUDA as ``lib``, its CUDA module holding the nvcc-built fatbin
    instead of source; written atomically, with the source kept beside it (``.cu``) for inspection."""
    from tvm.runtime import _ffi_api

    source = exe.mod.imports[0].inspect_source()
    fatbin = nvcc_compile(prelude() + source, arch, extra=extra)   # the helpers TVM's call_extern names

    def pack_imports(mod, is_system_lib, prefix, workspace_dir):
        c = _ffi_api.ModulePackImportsToC(mod, is_system_lib, prefix)
        path = os.path.join(workspace_dir, "devc.c")
        with open(path, "w") as f:
            f.write(_c_array(c, patch_library_bin(_parse_c_array(c), source, fatbin)))
        return path

    part = lib.with_name(f".{lib.stem}.{os.getpid()}.tmp.so")
    exe.mod.export_library(str(part), fpack_imports=pack_imports)
    lib.with_suffix(".cu").write_text(prelude() + source)
    os.replace(part, lib)
    return lib


def build_ops_library(ops: dict[str, tuple[str, dict]], arch: str, pdl: bool = True) -> Path:
    """The library of the non-LUT ops ``ops`` (function name -> (kind, params), see ops.py), cached by content;
    ``pdl``: its kernels launched with programmatic dependent launch on sm_90 (ops.op_module)."""
    h = hashlib.sha256()
    for f in ("ops.py", "attention.py", "build.py"):
        h.update((HERE / f).read_bytes())
    h.update(repr(sorted(ops.items())).encode())
    h.update(f"{__version__} {arch}{'' if pdl else ' no-pdl'}".encode())   # as for the LUT libraries: found again without nvcc or TVM
    lib = cache_dir() / f"ops_cuda_{arch}_{h.hexdigest()[:20]}.so"
    if lib.exists():
        return lib
    try:
        import tvm  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"the CUDA ops library {lib.name} is not in the cache ({lib.parent}) and TVM is not "
                           "installed here to build it") from e
    from .ops import op_module

    return export_fatbin(op_module(ops, arch, pdl), arch, lib)
