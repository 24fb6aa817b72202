"""llama.cpp's CPU matmul kernels as a benchmark peer: ggml (the shared libraries llama-cpp-python builds) driven
through ctypes, as ../shared/tools/peers/peers_bench.py does. Optional: without llama-cpp-python the peer is
reported as skipped. Build it with
``CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF"
pip install llama-cpp-python`` (~10 min on 2 cores).

One timed sweep multiplies every copy of the weight by the same activations in one ggml graph (the copies keep
the weights cold, as in ``bench/kernels.py``); weights sit in the CPU "REPACK" buffer (interleaved layouts,
what llama.cpp uses by default) for the types ggml repacks on x86, in a plain buffer otherwise.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
from functools import lru_cache

import numpy as np

TYPES = {"f32": 0, "q4_0": 2, "q2_K": 10, "q4_K": 12, "tq1_0": 34, "tq2_0": 35}
# the types ggml repacks on x86 (ggml_repack_get_optimal_repack_type, ggml-cpu/repack.cpp), each with the CPU
# flag its repacked kernel needs: q2_K's is AVX-512 only, and given the repack buffer on an AVX2-only host
# (AMD Zen 3) llama-cpp-python 0.3.36 crashed in ggml_backend_tensor_set
REPACKED_ON_X86 = {"q4_0": "avx2", "q4_K": "avx2", "q2_K": "avx512f"}


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


class _TypeTraits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64), ("blck_size_interleave", ctypes.c_int64),
                ("type_size", ctypes.c_size_t), ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class Ggml:
    """The ggml functions the peer needs, with their C signatures, and the CPU backend."""

    def __init__(self):
        spec = importlib.util.find_spec("llama_cpp")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("llama-cpp-python is not installed (optional peer)")
        libdir = os.path.join(list(spec.submodule_search_locations)[0], "lib")
        base = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
        cpu = ctypes.CDLL(os.path.join(libdir, "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
        vp, sz, i64, i32 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64, ctypes.c_int
        sig = {
            (base, "ggml_init"): (vp, [_InitParams]), (base, "ggml_free"): (None, [vp]),
            (base, "ggml_new_tensor_2d"): (vp, [vp, i32, i64, i64]), (base, "ggml_mul_mat"): (vp, [vp, vp, vp]),
            (base, "ggml_new_graph"): (vp, [vp]), (base, "ggml_build_forward_expand"): (None, [vp, vp]),
            (base, "ggml_tensor_overhead"): (sz, []), (base, "ggml_graph_overhead"): (sz, []),
            (base, "ggml_row_size"): (sz, [i32, i64]),
            (base, "ggml_quantize_chunk"): (sz, [i32, vp, vp, i64, i64, i64, vp]),
            (base, "ggml_get_type_traits"): (ctypes.POINTER(_TypeTraits), [i32]),
            (base, "ggml_backend_get_device"): (vp, [vp]), (base, "ggml_backend_dev_backend_reg"): (vp, [vp]),
            (base, "ggml_backend_reg_get_proc_address"): (vp, [vp, ctypes.c_char_p]),
            (base, "ggml_backend_buft_name"): (ctypes.c_char_p, [vp]),
            (base, "ggml_backend_alloc_ctx_tensors_from_buft"): (vp, [vp, vp]),
            (base, "ggml_backend_tensor_set"): (None, [vp, vp, sz, sz]),
            (base, "ggml_backend_tensor_get"): (None, [vp, vp, sz, sz]),
            (base, "ggml_backend_graph_compute"): (i32, [vp, vp]), (base, "ggml_backend_buffer_free"): (None, [vp]),
            (cpu, "ggml_cpu_init"): (None, []), (cpu, "ggml_backend_cpu_init"): (vp, []),
            (cpu, "ggml_backend_cpu_set_n_threads"): (None, [vp, i32]),
            (cpu, "ggml_backend_cpu_buffer_type"): (vp, []),
        }
        for (lib, name), (res, args) in sig.items():
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
            setattr(self, name, f)
        self.ggml_cpu_init()
        self.backend = self.ggml_backend_cpu_init()
        self.cpu_buft = self.ggml_backend_cpu_buffer_type()
        self.repack_buft = self._extra_buffer_type("REPACK")

    def _extra_buffer_type(self, tag: str):
        dev = self.ggml_backend_get_device(self.backend)
        fp = self.ggml_backend_reg_get_proc_address(self.ggml_backend_dev_backend_reg(dev),
                                                     b"ggml_backend_dev_get_extra_bufts")
        if not fp:
            return None
        arr = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(fp)(dev)
        i = 0
        while arr and arr[i]:
            if tag in self.ggml_backend_buft_name(arr[i]).decode().upper():
                return arr[i]
            i += 1
        return None

    def quantize(self, w: np.ndarray, tname: str) -> np.ndarray:
        n, k = w.shape
        dst = np.empty((n, self.ggml_row_size(TYPES[tname], k)), np.uint8)
        self.ggml_quantize_chunk(TYPES[tname], np.ascontiguousarray(w, np.float32).ctypes.data, dst.ctypes.data,
                                 0, n, k, None)
        return dst

    def dequantize(self, q: np.ndarray, tname: str, n: int, k: int) -> np.ndarray:
        out = np.empty((n, k), np.float32)
        _TO_FLOAT(self.ggml_get_type_traits(TYPES[tname]).contents.to_float)(q.ctypes.data, out.ctypes.data, n * k)
        return out

    def context(self, tensors: int, graph: bool = False):
        mem = self.ggml_tensor_overhead() * (tensors + 4) + (self.ggml_graph_overhead() if graph else 0) + 4096
        return self.ggml_init(_InitParams(int(mem), None, True))


def _repacked_here(tname: str) -> bool:
    from lutc.runtime.isa import cpu_flags

    return tname in REPACKED_ON_X86 and REPACKED_ON_X86[tname] in cpu_flags()


@lru_cache(maxsize=1)
def ggml() -> Ggml:
    return Ggml()


class GgmlMatmul:
    """``y_i = x @ W_i.T`` for every copy W_i of one quantized weight, in one ggml graph."""

    def __init__(self, copies: list[np.ndarray], tname: str, n: int, k: int, x: np.ndarray, threads: int):
        g = self.g = ggml()
        t, m = TYPES[tname], x.shape[0]
        buft = g.repack_buft if g.repack_buft and _repacked_here(tname) else g.cpu_buft
        self.ctx_w = g.context(len(copies))
        ws = [g.ggml_new_tensor_2d(self.ctx_w, t, k, n) for _ in copies]
        self.buf_w = g.ggml_backend_alloc_ctx_tensors_from_buft(self.ctx_w, buft)
        if not self.buf_w:
            raise RuntimeError("ggml could not allocate the weight buffer")
        for w, q in zip(ws, copies):
            g.ggml_backend_tensor_set(w, q.ctypes.data, 0, q.nbytes)
        self.ctx_io = g.context(len(copies) + 1, graph=True)
        self.x = g.ggml_new_tensor_2d(self.ctx_io, TYPES["f32"], k, m)
        self.ys = [g.ggml_mul_mat(self.ctx_io, w, self.x) for w in ws]
        self.graph = g.ggml_new_graph(self.ctx_io)
        for y in self.ys:
            g.ggml_build_forward_expand(self.graph, y)
        self.buf_io = g.ggml_backend_alloc_ctx_tensors_from_buft(self.ctx_io, g.cpu_buft)
        xc = np.ascontiguousarray(x, np.float32)
        g.ggml_backend_tensor_set(self.x, xc.ctypes.data, 0, xc.nbytes)
        self.threads, self.shape = threads, (m, n)

    def __call__(self) -> None:
        self.g.ggml_backend_cpu_set_n_threads(self.g.backend, self.threads)
        if self.g.ggml_backend_graph_compute(self.g.backend, self.graph) != 0:
            raise RuntimeError("ggml_backend_graph_compute failed")

    def close(self) -> None:
        """Free the weight copies and the graph (a benchmark builds one of these per cell)."""
        for buf in (self.buf_io, self.buf_w):
            if buf:
                self.g.ggml_backend_buffer_free(buf)
        for ctx in (self.ctx_io, self.ctx_w):
            if ctx:
                self.g.ggml_free(ctx)
        self.buf_io = self.buf_w = self.ctx_io = self.ctx_w = None

    def result(self) -> np.ndarray:
        y = np.empty(self.shape, np.float32)
        self.g.ggml_backend_tensor_get(self.ys[0], y.ctypes.data, 0, y.nbytes)
        return y
