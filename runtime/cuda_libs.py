"""Loading the CUDA kernels without the compiler: libtvm_runtime.so, the CUDA runtime (libcudart) and
libtvm_runtime_cuda.so (from an artifact's ``lib/``, a folder named by ``LUTC_TVM_LIB_DIR``, or the apache-tvm
wheel), then ``tvm_ffi.load_module``. What is missing is said plainly."""
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


_ARTIFACT_LIB_DIRS: list[Path] = []   # an artifact's bundled libraries come first


def _tvm_lib_dirs() -> list[Path]:
    dirs = list(_ARTIFACT_LIB_DIRS)
    if os.environ.get("LUTC_TVM_LIB_DIR"):
        dirs.append(Path(os.environ["LUTC_TVM_LIB_DIR"]))
    spec = importlib.util.find_spec("tvm")
    if spec is not None and spec.origin is not None:
        dirs.append(Path(spec.origin).parent / "lib")
    return dirs


def find_library(name: str) -> str:
    """The path of TVM runtime library ``name`` (libtvm_runtime.so, libtvm_runtime_cuda.so)."""
    return _find(name)


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


_CUDA_LOADED: list[str] = []


def ensure_cuda_runtime(lib_dir: str | Path | None = None) -> None:
    """dlopen (RTLD_GLOBAL) what a TVM-built CUDA library needs at run time, once per process (``lib_dir``:
    a folder holding libtvm_runtime.so and libtvm_runtime_cuda.so, e.g. an artifact's ``lib/``)."""
    if _CUDA_LOADED:
        return
    from .tvm_libs import ensure_tvm_runtime

    if lib_dir is not None:
        _ARTIFACT_LIB_DIRS.insert(0, Path(lib_dir))
    ensure_tvm_runtime(_find("libtvm_runtime.so"))
    _load_cudart()
    path = _find("libtvm_runtime_cuda.so")
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    _CUDA_LOADED.append(path)


@functools.lru_cache(maxsize=None)
def load_library(path: str):
    """The ``main`` function of a CUDA LUT library (see build.py)."""
    return load_module(path)["main"]


def load_module(path: str, lib_dir: str | Path | None = None):
    """A TVM-built CUDA library (fatbin inside), after the GPU and runtime libraries are checked."""
    require_gpu()
    ensure_cuda_runtime(lib_dir)
    import tvm_ffi

    return tvm_ffi.load_module(str(path))
