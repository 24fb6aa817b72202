"""Build the CPU LUT matmul: a TVM-generated driver (rows, then N tiles split over TVM's thread pool) that
calls the micro-kernels of lut_kernels.c, linked in with ``export_library(addons=...)``. Libraries are cached
on disk by a content hash of the sources, the shape parameters, the compiler versions and lutc's version."""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from ... import __version__
from .isa import GCC_FLAGS

SOURCE = Path(__file__).with_name("lut_kernels.c")


def cache_dir() -> Path:
    d = Path(os.environ.get("LUTC_CACHE", Path.home() / ".cache" / "lutc")) / "kernels"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _key(params: dict, source: Path = SOURCE, driver: Path = Path(__file__)) -> str:
    import tvm

    h = hashlib.sha256()
    h.update(source.read_bytes())
    h.update(driver.read_bytes())
    h.update(repr(sorted(params.items())).encode())
    h.update(f"{__version__} {tvm.__version__} {_gcc_version()}".encode())
    return h.hexdigest()[:20]


def _gcc_version() -> str:
    return subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def _object(isa: str, out: Path, source: Path = SOURCE) -> Path:
    obj = out / f"{source.stem}_{isa}.o"
    cmd = ["gcc", "-O3", "-fPIC", "-std=c11", "-c", str(source), "-o", str(obj), *GCC_FLAGS[isa]]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"compiling the {isa} micro-kernels failed:\n{r.stderr}")
    return obj


def _prim_func(p: dict):
    """The driver: per row, (RMSNorm into a scratch row, then) tables; then N tiles over the thread pool.

    Arguments: x, [norm weight, scratch,] tables, table scales, xsum, weights, scales, zeros, y."""
    if p.get("prologue", "none") == "rms_norm":
        return _prim_func_norm(p)
    from tvm.script import tirx as T

    k, runs, groups, tiles, pre, gs = _dims(p)
    lookups = _lookups_macro(p)

    @T.prim_func
    def main(x: T.handle, tab: T.handle, tsc: T.handle, xs: T.handle, w: T.handle, s: T.handle, z: T.handle,
             y: T.handle):
        T.func_attr({"global_symbol": "main"})
        m = T.int64()
        X = T.match_buffer(x, (m, k), "float32")
        TAB = T.match_buffer(tab, (m, runs, 16), "int8")
        TSC = T.match_buffer(tsc, (m, groups), "float32")
        XS = T.match_buffer(xs, (m, groups), "float32")
        for row in range(m):
            T.evaluate(T.call_extern("int32", pre, T.address_of(X[row, 0]), T.int64(k), T.int64(p["k_pad"]),
                                     T.int64(gs), T.address_of(TAB[row, 0, 0]), T.address_of(TSC[row, 0]),
                                     T.address_of(XS[row, 0])))
        lookups(m, TAB, TSC, XS, w, s, z, y)

    return main


def _prim_func_norm(p: dict):
    from tvm.script import tirx as T

    k, runs, groups, tiles, pre, gs = _dims(p)
    norm, eps = f"lutc_rmsnorm_{p['isa']}", float(p["eps"])
    lookups = _lookups_macro(p)

    @T.prim_func
    def main(x: T.handle, nw: T.handle, scr: T.handle, tab: T.handle, tsc: T.handle, xs: T.handle, w: T.handle,
             s: T.handle, z: T.handle, y: T.handle):
        T.func_attr({"global_symbol": "main"})
        m = T.int64()
        X = T.match_buffer(x, (m, k), "float32")
        NW = T.match_buffer(nw, (k,), "float32")
        SCR = T.match_buffer(scr, (k,), "float32")
        TAB = T.match_buffer(tab, (m, runs, 16), "int8")
        TSC = T.match_buffer(tsc, (m, groups), "float32")
        XS = T.match_buffer(xs, (m, groups), "float32")
        for row in range(m):
            T.evaluate(T.call_extern("int32", norm, T.address_of(X[row, 0]), NW.data, T.int64(k), T.float32(eps),
                                     SCR.data))
            T.evaluate(T.call_extern("int32", pre, SCR.data, T.int64(k), T.int64(p["k_pad"]), T.int64(gs),
                                     T.address_of(TAB[row, 0, 0]), T.address_of(TSC[row, 0]),
                                     T.address_of(XS[row, 0])))
        lookups(m, TAB, TSC, XS, w, s, z, y)

    return main


def _dims(p: dict):
    tiles = p["n_pad"] // 64
    return p["k"], p["runs"], p["groups"], tiles, f"lutc_precompute_{p['isa']}", p["k_pad"] // p["groups"]


def _lookups_macro(p: dict):
    """The lookup half of the driver, shared by both entry points: N tiles split over TVM's thread pool."""
    from tvm.script import tirx as T

    tiles, threads, runs, groups, pairs = p["n_pad"] // 64, p["threads"], p["runs"], p["groups"], p["pairs"]
    per = -(-tiles // threads)
    gemv = f"lutc_gemv_{p['isa']}"

    @T.macro
    def lookups(m, TAB, TSC, XS, w, s, z, y):
        W = T.match_buffer(w, (tiles, runs, pairs, 64), "uint8")
        S = T.match_buffer(s, (tiles, groups, 64), "uint16")
        Z = T.match_buffer(z, (tiles, groups, 64), "int8")
        Y = T.match_buffer(y, (m, p["n_pad"]), "float32")
        for t in T.parallel(threads) if threads > 1 else T.serial(1):  # one thread: no pool round trip
            T.evaluate(T.call_extern("int32", gemv, TAB.data, TSC.data, XS.data, W.data, S.data, Z.data, Y.data,
                                     m, T.int64(p["n_pad"]), T.int64(runs), T.int64(groups), T.int64(p["bits"]),
                                     T.min(T.int64(t * per), T.int64(tiles)),
                                     T.min(T.int64(t * per + per), T.int64(tiles))))

    return lookups


def build_library(params: dict) -> Path:
    """The path of a shared library whose ``main`` computes the LUT matmul for ``params``."""
    lib = cache_dir() / f"lut_matmul_{_key(params)}.so"
    return lib if lib.exists() else export(lambda: {"main": _prim_func(params)}, params["isa"], SOURCE, lib)


def export(functions, isa: str, source: Path, lib: Path) -> Path:
    """Compile the TIR ``functions()`` (name -> prim_func) for ``isa``, link the C ``source`` in, and write
    ``lib`` atomically (a concurrent builder never sees half a library)."""
    import tvm

    mcpu = {"avx512": "skylake-avx512", "avx2": "haswell", "generic": "x86-64"}[isa]
    exe = tvm.compile(tvm.IRModule(functions()), target=tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    with tempfile.TemporaryDirectory() as tmp:
        obj = _object(isa, Path(tmp), source)
        part = lib.with_name(f".{lib.stem}.{os.getpid()}.tmp.so")
        exe.export_library(str(part), addons=[str(obj)])
        os.replace(part, lib)
    return lib
