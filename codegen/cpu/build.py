"""Build the CPU LUT matmul: a TVM-generated driver (rows, then N tiles or rows split over TVM's thread pool, per
row-count bucket as the schedule says) that calls the micro-kernels of lut_kernels.c (int8 tables) and
lut_f32_kernels.c (float tables), linked in with ``export_library(addons=...)``. Libraries are cached on disk by
a content hash of the sources, the parameters, the compiler versions and lutc's version; the compiled C objects
are cached too (they depend on the ISA and the sources only)."""
from __future__ import annotations

import hashlib
import os
import subprocess
from functools import lru_cache
from pathlib import Path

from ... import __version__
from .isa import GCC_FLAGS
from .schedule import BUCKETS, default_schedule

HERE = Path(__file__).parent
SOURCES = (HERE / "lut_kernels.c", HERE / "lut_f32_kernels.c")
HEADER = HERE / "lut_common.h"
KNOBS = ("threads", "split", "rows", "mblock")


def cache_dir(sub: str = "kernels") -> Path:
    d = Path(os.environ.get("LUTC_CACHE", Path.home() / ".cache" / "lutc")) / sub
    d.mkdir(parents=True, exist_ok=True)
    return d


def _sources(sources) -> list[Path]:
    return [sources] if isinstance(sources, Path) else list(sources)


def source_digest(sources=SOURCES, driver: Path = Path(__file__)) -> str:
    """Hash of the kernel sources, the driver generator and the compilers: what every cached artifact
    built from them depends on."""
    import tvm

    h = hashlib.sha256()
    for f in (*_sources(sources), HEADER, driver):
        h.update(f.read_bytes())
    h.update(f"{__version__} {tvm.__version__} {gcc_version()}".encode())
    return h.hexdigest()


def _key(params: dict, sources=SOURCES, driver: Path = Path(__file__)) -> str:
    h = hashlib.sha256(source_digest(sources, driver).encode())
    h.update(repr(sorted(params.items())).encode())
    return h.hexdigest()[:20]


@lru_cache(maxsize=None)
def gcc_version() -> str:
    return subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def _object(isa: str, source: Path) -> Path:
    """The micro-kernels of ``source`` compiled for ``isa``, cached by content."""
    cmd = ["gcc", "-O3", "-fPIC", "-std=c11", f"-I{HEADER.parent}", "-c", str(source), *GCC_FLAGS[isa]]
    h = hashlib.sha256(source.read_bytes() + HEADER.read_bytes() + repr(GCC_FLAGS[isa]).encode()
                       + gcc_version().encode()).hexdigest()[:20]
    obj = cache_dir("objects") / f"{source.stem}_{isa}_{h}.o"
    if obj.exists():
        return obj
    part = obj.with_name(f".{obj.stem}.{os.getpid()}.tmp.o")
    r = subprocess.run([*cmd, "-o", str(part)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"compiling the {isa} micro-kernels of {source.name} failed:\n{r.stderr}")
    os.replace(part, obj)
    return obj


def _i64(v):
    from tvm import tirx

    if isinstance(v, int):
        return tirx.const(v, "int64")
    return v.astype("int64")  # a no-op on int64 expressions


def _ranges(t, threads, split, m, tiles: int) -> tuple:
    """(tile0, tile1, row0, row1) of task ``t``: N tiles split over the tasks ("n", 0), or rows ("m", 1).
    ``threads`` and ``split`` are constants in a built schedule and variables in the tuning entry point."""
    from tvm import tirx

    t, th, m, nt = _i64(t), _i64(threads), _i64(m), _i64(tiles)
    per_n, per_m = (nt + th - 1) // th, (m + th - 1) // th
    by_n = (tirx.min(t * per_n, nt), tirx.min(t * per_n + per_n, nt), _i64(0), m)
    by_m = (_i64(0), nt, tirx.min(t * per_m, m), tirx.min(t * per_m + per_m, m))
    if isinstance(split, str):
        return by_n if split == "n" else by_m
    return tuple(tirx.Select(tirx.EQ(split, _i64(1)), b, a) for a, b in zip(by_n, by_m))


def _loop(threads):
    """TVM's thread pool for more than one thread; one thread runs inline (no pool round trip)."""
    from tvm.script import tirx as T

    return T.serial(1) if isinstance(threads, int) and threads == 1 else T.parallel(threads)


def _names(p: dict) -> tuple[str, str, str]:
    sfx = "_f32" if p.get("table", "int8") == "f32" else ""
    return f"lutc_precompute{sfx}_{p['isa']}", f"lutc_gemv{sfx}_{p['isa']}", "float32" if sfx else "int8"


def _macros(p: dict):
    """The driver's pieces: tables per row (after the RMSNorm or SwiGLU prologue when there is one), and the
    lookups of one schedule (knobs: threads, split, rows, mblock)."""
    from tvm.script import tirx as T

    k, k_pad, runs, groups, pairs = p["k"], p["k_pad"], p["runs"], p["groups"], p["pairs"]
    tiles, n_pad, bits, gs = p["n_pad"] // 64, p["n_pad"], p["bits"], p["k_pad"] // p["groups"]
    pre, gemv, _ = _names(p)
    norm, eps, swiglu = f"lutc_rmsnorm_{p['isa']}", float(p.get("eps", 0.0)), f"lutc_swiglu_{p['isa']}"

    @T.macro
    def tables(m, X, TAB, TSC, XS):
        for row in range(m):
            T.evaluate(T.call_extern("int32", pre, T.address_of(X[row, 0]), T.int64(k), T.int64(k_pad),
                                     T.int64(gs), T.address_of(TAB[row, 0, 0]), T.address_of(TSC[row, 0]),
                                     T.address_of(XS[row, 0])))

    @T.macro
    def norm_tables(m, X, NW, SCR, TAB, TSC, XS):
        for row in range(m):
            T.evaluate(T.call_extern("int32", norm, T.address_of(X[row, 0]), NW.data, T.int64(k), T.float32(eps),
                                     SCR.data))
            T.evaluate(T.call_extern("int32", pre, SCR.data, T.int64(k), T.int64(k_pad), T.int64(gs),
                                     T.address_of(TAB[row, 0, 0]), T.address_of(TSC[row, 0]),
                                     T.address_of(XS[row, 0])))

    @T.macro
    def lookups(m, TAB, TSC, XS, W, S, Z, Y, threads, split, rows, mblock):
        for t in _loop(threads):
            T.evaluate(T.call_extern("int32", gemv, TAB.data, TSC.data, XS.data, W.data, S.data, Z.data, Y.data,
                                     m, T.int64(n_pad), T.int64(runs), T.int64(groups), T.int64(bits),
                                     _ranges(t, threads, split, m, tiles)[0], _ranges(t, threads, split, m, tiles)[1],
                                     _ranges(t, threads, split, m, tiles)[2], _ranges(t, threads, split, m, tiles)[3],
                                     _i64(rows), _i64(mblock)))

    @T.macro
    def swiglu_tables(m, X, SCR, TAB, TSC, XS):
        for row in range(m):
            T.evaluate(T.call_extern("int32", swiglu, T.address_of(X[row, 0]), T.int64(k), SCR.data))
            T.evaluate(T.call_extern("int32", pre, SCR.data, T.int64(k), T.int64(k_pad), T.int64(gs),
                                     T.address_of(TAB[row, 0, 0]), T.address_of(TSC[row, 0]),
                                     T.address_of(XS[row, 0])))

    return tables, norm_tables, swiglu_tables, lookups


def _prim_funcs(p: dict, tune: bool = False) -> dict:
    """``main`` (dispatching on the row count to the schedule's knobs), and with ``tune`` a ``tune`` entry point
    taking the knobs as arguments (threads, split 0=n 1=m, rows, mblock).

    Arguments: x, [norm weight,] [scratch,] tables, table scales, xsum, weights, scales, zeros, y[, knobs]: the
    norm weight and a scratch row with an RMSNorm prologue, a scratch row with a SwiGLU prologue (whose x rows
    are [gate | up], 2k wide)."""
    from tvm.script import tirx as T

    k, runs, groups, pairs, n_pad, tiles = p["k"], p["runs"], p["groups"], p["pairs"], p["n_pad"], p["n_pad"] // 64
    tdt = _names(p)[2]
    tables, norm_tables, swiglu_tables, lookups = _macros(p)
    sched = p.get("schedule") or default_schedule(p["isa"], p.get("table", "int8"), p["threads"])
    b0, b1, b2, b3 = (tuple(b[kn] for kn in KNOBS) for b in sched)
    lim = [hi for _, hi in BUCKETS[:-1]]

    @T.macro
    def dispatch(m, TAB, TSC, XS, W, S, Z, Y):
        if m <= lim[0]:
            lookups(m, TAB, TSC, XS, W, S, Z, Y, b0[0], b0[1], b0[2], b0[3])
        elif m <= lim[1]:
            lookups(m, TAB, TSC, XS, W, S, Z, Y, b1[0], b1[1], b1[2], b1[3])
        elif m <= lim[2]:
            lookups(m, TAB, TSC, XS, W, S, Z, Y, b2[0], b2[1], b2[2], b2[3])
        else:
            lookups(m, TAB, TSC, XS, W, S, Z, Y, b3[0], b3[1], b3[2], b3[3])

    @T.prim_func
    def main(x: T.handle, tab: T.handle, tsc: T.handle, xs: T.handle, w: T.handle, s: T.handle, z: T.handle,
             y: T.handle):
        T.func_attr({"global_symbol": "main"})
        m = T.int64()
        X = T.match_buffer(x, (m, k), "float32")
        TAB = T.match_buffer(tab, (m, runs, 16), tdt)
        TSC = T.match_buffer(tsc, (m, groups), "float32")
        XS = T.match_buffer(xs, (m, groups), "float32")
        W = T.match_buffer(w, (tiles, runs, pairs, 64), "uint8")
        S = T.match_buffer(s, (tiles, groups, 64), "uint16")
        Z = T.match_buffer(z, (tiles, groups, 64), "int8")
        Y = T.match_buffer(y, (m, n_pad), "float32")
        tables(m, X, TAB, TSC, XS)
        dispatch(m, TAB, TSC, XS, W, S, Z, Y)

    @T.prim_func
    def main_norm(x: T.handle, nw: T.handle, scr: T.handle, tab: T.handle, tsc: T.handle, xs: T.handle, w: T.handle,
                  s: T.handle, z: T.handle, y: T.handle):
        T.func_attr({"global_symbol": "main"})
        m = T.int64()
        X = T.match_buffer(x, (m, k), "float32")
        NW = T.match_buffer(nw, (k,), "float32")
        SCR = T.match_buffer(scr, (k,), "float32")
        TAB = T.match_buffer(tab, (m, runs, 16), tdt)
        TSC = T.match_buffer(tsc, (m, groups), "float32")
        XS = T.match_buffer(xs, (m, groups), "float32")
        W = T.match_buffer(w, (tiles, runs, pairs, 64), "uint8")
        S = T.match_buffer(s, (tiles, groups, 64), "uint16")
        Z = T.match_buffer(z, (tiles, groups, 64), "int8")
        Y = T.match_buffer(y, (m, n_pad), "float32")
        norm_tables(m, X, NW, SCR, TAB, TSC, XS)
        dispatch(m, TAB, TSC, XS, W, S, Z, Y)

    @T.prim_func
    def main_swiglu(x: T.handle, scr: T.handle, tab: T.handle, tsc: T.handle, xs: T.handle, w: T.handle,
                    s: T.handle, z: T.handle, y: T.handle):
        T.func_attr({"global_symbol": "main"})
        m = T.int64()
        X = T.match_buffer(x, (m, 2 * k), "float32")
        SCR = T.match_buffer(scr, (k,), "float32")
        TAB = T.match_buffer(tab, (m, runs, 16), tdt)
        TSC = T.match_buffer(tsc, (m, groups), "float32")
        XS = T.match_buffer(xs, (m, groups), "float32")
        W = T.match_buffer(w, (tiles, runs, pairs, 64), "uint8")
        S = T.match_buffer(s, (tiles, groups, 64), "uint16")
        Z = T.match_buffer(z, (tiles, groups, 64), "int8")
        Y = T.match_buffer(y, (m, n_pad), "float32")
        swiglu_tables(m, X, SCR, TAB, TSC, XS)
        dispatch(m, TAB, TSC, XS, W, S, Z, Y)

    fns = {"main": {"none": main, "rms_norm": main_norm, "swiglu": main_swiglu}[p.get("prologue", "none")]}
    if not tune:
        return fns

    @T.prim_func
    def tune_fn(x: T.handle, tab: T.handle, tsc: T.handle, xs: T.handle, w: T.handle, s: T.handle, z: T.handle,
                y: T.handle, nt: T.int64, split: T.int64, rows: T.int64, mblock: T.int64):
        T.func_attr({"global_symbol": "tune"})
        m = T.int64()
        X = T.match_buffer(x, (m, k), "float32")
        TAB = T.match_buffer(tab, (m, runs, 16), tdt)
        TSC = T.match_buffer(tsc, (m, groups), "float32")
        XS = T.match_buffer(xs, (m, groups), "float32")
        W = T.match_buffer(w, (tiles, runs, pairs, 64), "uint8")
        S = T.match_buffer(s, (tiles, groups, 64), "uint16")
        Z = T.match_buffer(z, (tiles, groups, 64), "int8")
        Y = T.match_buffer(y, (m, n_pad), "float32")
        tables(m, X, TAB, TSC, XS)
        if nt == 1:
            lookups(m, TAB, TSC, XS, W, S, Z, Y, 1, split, rows, mblock)
        else:
            lookups(m, TAB, TSC, XS, W, S, Z, Y, nt, split, rows, mblock)

    fns["tune"] = tune_fn
    return fns


def build_library(params: dict, tune: bool = False) -> Path:
    """The path of a shared library whose ``main`` computes the LUT matmul for ``params`` (with ``tune``, also a
    ``tune`` entry point taking the schedule knobs as arguments: what the tuner times)."""
    lib = cache_dir() / f"lut_{'tune' if tune else 'matmul'}_{_key(params)}.so"
    return lib if lib.exists() else export(lambda: _prim_funcs(params, tune), params["isa"], SOURCES, lib)


def export(functions, isa: str, sources, lib: Path) -> Path:
    """Compile the TIR ``functions()`` (name -> prim_func) for ``isa``, link the C ``sources`` in, and write
    ``lib`` atomically (a concurrent builder never sees half a library)."""
    import tvm

    mcpu = {"avx512": "skylake-avx512", "avx2": "haswell", "generic": "x86-64"}[isa]
    exe = tvm.compile(tvm.IRModule(functions()), target=tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    objs = [str(_object(isa, src)) for src in _sources(sources)]
    part = lib.with_name(f".{lib.stem}.{os.getpid()}.tmp.so")
    exe.export_library(str(part), addons=objs)
    os.replace(part, lib)
    return lib
