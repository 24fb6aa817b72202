"""Loading TVM's runtime library without importing the compiler: what a TVM-built kernel needs at run time
(thread pool, workspace allocation)."""
from __future__ import annotations

import ctypes
import functools
import os
import importlib.util
from pathlib import Path


_LOADED: list[str] = []


def ensure_tvm_runtime(path: str | None = None) -> str:
    """dlopen libtvm_runtime.so with RTLD_GLOBAL (from ``path``, else from the installed apache-tvm wheel),
    once per process: a second copy from another path would register TVM's global functions twice (abort),
    so once one is loaded (an artifact's, or the wheel's), every later caller shares it.

    TVM sizes its thread pool once, from TVM_NUM_THREADS, else from the cores it counts as "big" (one on
    the 2-vCPU development machines, so a 2-task parallel loop ran on one thread): unless the user chose,
    the pool gets every CPU this process may run on, and kernels pick how many tasks they launch."""
    if _LOADED:
        return _LOADED[0]
    tvm_ffi()  # loads libtvm_ffi.so (RTLD_GLOBAL), which libtvm_runtime.so links against
    os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                 else os.cpu_count() or 1))
    if path is None:
        spec = importlib.util.find_spec("tvm")
        if spec is None or spec.origin is None:
            raise RuntimeError("libtvm_runtime.so not found: install apache-tvm or pass the library's path")
        path = str(Path(spec.origin).parent / "lib" / "libtvm_runtime.so")
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    _LOADED.append(path)
    return path


@functools.lru_cache(maxsize=1)
def tvm_ffi():
    """``import tvm_ffi``, without the torch import it attempts eagerly (only for its optional torch
    interop, which lutc does not use: arrays go through DLPack). A runtime process stays small and starts
    fast; a process that has already imported torch is left as it is."""
    import sys

    if "torch" in sys.modules:
        import tvm_ffi as mod

        return mod
    sys.modules["torch"] = None  # makes `import torch` raise ImportError inside tvm_ffi
    try:
        import tvm_ffi as mod
    finally:
        del sys.modules["torch"]
    return mod
