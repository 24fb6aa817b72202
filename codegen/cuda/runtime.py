"""Loading the CUDA kernels without the compiler: libtvm_runtime.so, the CUDA runtime (libcudart) and
libtvm_runtime_cuda.so (from the apache-tvm wheel, or a folder named by ``LUTC_TVM_LIB_DIR``), then
``tvm_ffi.load_module``. What is missing is said plainly."""
from __future__ import annotations

import ctypes
import functools
import glob
import importlib.util
import os
from pathlib import Path


class NoGPUError(RuntimeError):
    pass


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def require_gpu() -> None:
    if not gpu_available():
        raise NoGPUError("no CUDA GPU is present (torch.cuda.is_available() is False): the CUDA LUT kernels were "
                         "built, but running them needs an NVIDIA GPU (sm_80 or newer) and torch with CUDA")


def _tvm_lib_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("LUTC_TVM_LIB_DIR"):
        dirs.append(Path(os.environ["LUTC_TVM_LIB_DIR"]))
    spec = importlib.util.find_spec("tvm")
    if spec is not None and spec.origin is not None:
        dirs.append(Path(spec.origin).parent / "lib")
    return dirs


def _find(name: str) -> str:
    for d in _tvm_lib_dirs():
        if (d / name).exists():
            return str(d / name)
    raise RuntimeError(f"{name} not found: install apache-tvm, or set LUTC_TVM_LIB_DIR to a folder holding "
                       f"libtvm_runtime.so and libtvm_runtime_cuda.so (searched {[str(d) for d in _tvm_lib_dirs()]})")


def _load_cudart() -> None:
    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
        try:
            ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
            return
        except OSError:
            pass
    cands = []
    try:
        import torch

        tdir = Path(torch.__file__).parent
        cands += glob.glob(str(tdir / "lib" / "libcudart.so*"))
        cands += glob.glob(str(tdir.parent / "nvidia" / "**" / "libcudart.so*"), recursive=True)
    except ImportError:
        pass
    cands += glob.glob("/usr/local/cuda/lib64/libcudart.so*") + glob.glob("/usr/local/cuda/targets/*/lib/libcudart.so*")
    for c in sorted(cands, reverse=True):
        try:
            ctypes.CDLL(c, mode=ctypes.RTLD_GLOBAL)
            return
        except OSError:
            pass
    raise RuntimeError("the CUDA runtime library (libcudart.so) was not found: install torch with CUDA or the CUDA "
                       "toolkit")


@functools.lru_cache(maxsize=1)
def ensure_cuda_runtime() -> None:
    """dlopen (RTLD_GLOBAL) what a TVM-built CUDA library needs at run time."""
    import tvm_ffi  # noqa: F401  (libtvm_ffi.so first)

    ctypes.CDLL(_find("libtvm_runtime.so"), mode=ctypes.RTLD_GLOBAL)
    _load_cudart()
    ctypes.CDLL(_find("libtvm_runtime_cuda.so"), mode=ctypes.RTLD_GLOBAL)


@functools.lru_cache(maxsize=None)
def load_library(path: str):
    """The ``main`` function of a CUDA LUT library (see build.py)."""
    require_gpu()
    ensure_cuda_runtime()
    import tvm_ffi

    return tvm_ffi.load_module(path)["main"]
