"""Loading TVM's runtime library without importing the compiler: what a TVM-built kernel needs at run time
(thread pool, workspace allocation)."""
from __future__ import annotations

import ctypes
import filecmp
import functools
import os
import importlib.util
from pathlib import Path


_LOADED: list[str] = []


def ensure_tvm_runtime(path: str | None = None) -> str:
    """dlopen libtvm_runtime.so with RTLD_GLOBAL (from ``path``, else from the installed apache-tvm wheel),
    once per process: a second copy from another path would register TVM's global functions twice (abort),
    so once one is loaded (an artifact's, or the wheel's), every later caller shares it. An artifact's copy
    that is byte for byte the installed wheel's is loaded from the wheel, so that a session may import the
    compiler after running an artifact (it would otherwise bring the wheel's copy as a second one).

    TVM sizes its thread pool once, from TVM_NUM_THREADS, else from the cores it counts as "big" (one on
    the 2-vCPU development machines, so a 2-task parallel loop ran on one thread): unless the user chose,
    the pool gets every CPU this process may run on, and kernels pick how many tasks they launch."""
    if _LOADED:
        return _LOADED[0]
    tvm_ffi()  # loads libtvm_ffi.so (RTLD_GLOBAL), which libtvm_runtime.so links against
    os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                 else os.cpu_count() or 1))
    wheel = _wheel_runtime()
    if path is None:
        if wheel is None:
            raise RuntimeError("libtvm_runtime.so not found: install apache-tvm or pass the library's path")
        path = str(wheel)
    elif wheel is not None and filecmp.cmp(path, wheel, shallow=False):
        # the same library as the installed compiler's: load that one, so that importing the compiler
        # later in this process (libtvm_compiler.so needs it) does not bring a second copy
        path = str(wheel)
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    _LOADED.append(path)
    return path


def _wheel_runtime() -> Path | None:
    """The installed apache-tvm wheel's libtvm_runtime.so (found without importing tvm), or None."""
    spec = importlib.util.find_spec("tvm")
    if spec is None or spec.origin is None:
        return None
    lib = Path(spec.origin).parent / "lib" / "libtvm_runtime.so"
    return lib if lib.exists() else None


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
