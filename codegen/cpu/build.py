"""Build the CPU LUT matmul: a TVM-generated driver (rows, then N tiles or rows split over TVM's thread pool, per
row-count bucket as the schedule says) that calls the micro-kernels of lut_kernels.c (int8 tables),
lut_f32_kernels.c (float tables) and, in AVX-512 libraries, lut_amx_kernels.c and lut_vnni_kernels.c (int8
activations on AMX tiles or with vpdpbusd), in AVX2 ones lut_madd_kernels.c (vpmaddubsw),
linked in with ``export_library(addons=...)``. Libraries are cached on disk by
a content hash of the sources, the parameters, the compiler versions and lutc's version; the compiled C objects
are cached too (they depend on the ISA and the sources only)."""
from __future__ import annotations

import hashlib
import os
import subprocess
from functools import lru_cache
from pathlib import Path

from ... import __version__
from ...runtime.isa import INT8_KERNEL_ISA
from .isa import GCC_FLAGS, SOURCE_FLAGS, c_compiler, llvm_target, native
from .schedule import BUCKETS, INT8_KERNELS, KNOBS, OLDER_DEFAULTS, default_schedule

HERE = Path(__file__).parent
SOURCES = (HERE / "lut_kernels.c", HERE / "lut_f32_kernels.c", HERE / "lut_amx_kernels.c", HERE / "lut_vnni_kernels.c",
           HERE / "lut_madd_kernels.c")
SOURCE_ISA = {f"lut_{kern}_kernels.c": isa for kern, isa in INT8_KERNEL_ISA.items()}  # compiled only there
HEADERS = (HERE / "lut_common.h", HERE / "lut_int8_common.h")
AMX_ROWS = 16  # the AMX kernel's row tile: a task's rows start at a multiple of it
PARALLEL_PREP_ROWS = 8  # calls with more rows than this build their tables (and prologues) on every thread


def sources_for(isa: str) -> tuple[Path, ...]:
    """The micro-kernel sources of an ``isa`` library (the int8 kernels only in the library of their ISA)."""
    return tuple(f for f in SOURCES if SOURCE_ISA.get(f.name, isa) == isa)


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
    for f in (*_sources(sources), *HEADERS, driver):
        h.update(f.read_bytes())
    h.update(f"{__version__} {tvm.__version__} {gcc_version()}".encode())
    return h.hexdigest()


def _key(params: dict, sources=SOURCES, driver: Path = Path(__file__)) -> str:
    h = hashlib.sha256(source_digest(sources, driver).encode())
    h.update(repr(sorted(params.items())).encode())
    return h.hexdigest()[:20]


@lru_cache(maxsize=None)
def gcc_version(cc: str = "gcc") -> str:
    return subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def _object(isa: str, source: Path) -> Path:
    """The micro-kernels of ``source`` compiled for ``isa`` (by a cross compiler for another machine's ISA), cached
    by content."""
    flags, cc = [*GCC_FLAGS[isa], *SOURCE_FLAGS.get(source.name, [])], c_compiler(isa)
    cmd = [cc, "-O3", "-fPIC", "-std=c11", f"-I{HERE}", "-c", str(source), *flags]
    h = hashlib.sha256(source.read_bytes() + b"".join(f.read_bytes() for f in HEADERS) + repr(flags).encode()
                       + gcc_version(cc).encode()).hexdigest()[:20]
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


def _ranges(t, threads, split, m, tiles: int, align: int = 1) -> tuple:
    """(tile0, tile1, row0, row1) of task ``t``: N tiles split over the tasks ("n", 0), or rows ("m", 1) in
    multiples of ``align``. ``threads`` and ``split`` are constants in a built schedule and variables in the
    tuning entry point."""
    from tvm import tirx

    t, th, m, nt = _i64(t), _i64(threads), _i64(m), _i64(tiles)
    per_n, per_m = (nt + th - 1) // th, ((m + th - 1) // th + (align - 1)) // align * align
    by_n = (tirx.min(t * per_n, nt), tirx.min(t * per_n + per_n, nt), _i64(0), m)
    by_m = (_i64(0), nt, tirx.min(t * per_m, m), tirx.min(t * per_m + per_m, m))
    if isinstance(split, str):
        return by_n if split == "n" else by_m
    return tuple(tirx.Select(tirx.EQ(split, _i64(1)), b, a) for a, b in zip(by_n, by_m))


def _loop(threads):
    """TVM's thread pool for more than one thread; one thread runs inline (no pool round trip)."""
    from ..tvmscript import T

    return T.serial(1) if isinstance(threads, int) and threads == 1 else T.parallel(threads)


def refused(name: str, limits: str = "") -> str:
    """What a C kernel's nonzero return code means (``limits``: what it refuses besides a failed scratch
    allocation), for the RuntimeError the driver raises."""
    why = f"{limits}, or no memory for its scratch" if limits else "no memory for its scratch"
    return (f"lutc's C kernel {name} returned an error, so its output was not written: {why} (a lutc bug if the "
            f"call came through lutc's own checks: please report the shapes)")


def checked_slots():
    """A macro ``check(RC, slots, why)``: a RuntimeError with message ``why`` if any of the first ``slots`` return
    codes in ``RC`` is nonzero. TVM drops an assert inside a parallel body (the pool's closure returns the error to
    nobody), so each task keeps its code in a slot of its own and the slots are checked after the loop."""
    from ..tvmscript import T

    @T.macro
    def check(RC, slots, why):
        for t in range(slots):
            assert RC[t] == 0, why

    return check


def checked_tasks():
    """A macro ``tasks(threads, call, args, why)``: ``call(t, *args)`` (a C call returning int32) for every task
    ``t`` (over TVM's pool past one thread), then a RuntimeError with message ``why`` if any returned nonzero."""
    from ..tvmscript import T

    check = checked_slots()

    @T.macro
    def tasks(threads, call, args, why):
        RC = T.alloc_buffer((threads,), "int32")
        for t in _loop(threads):
            RC[t] = call(t, *args)
        check(RC, threads, why)

    return tasks


def _names(p: dict, kernel: str = "lut") -> tuple[str, str, str]:
    """The C entry points of ``kernel``: (per-row preparation, the matmul over tiles, the tables' dtype)."""
    if kernel in INT8_KERNELS:  # all read lutc_int8_quantize's int8 activations
        return f"lutc_int8_quantize_{p['isa']}", f"lutc_{kernel}_gemm_{p['isa']}", "int8"
    sfx = "_f32" if p.get("table", "int8") == "f32" else ""
    return f"lutc_precompute{sfx}_{p['isa']}", f"lutc_gemv{sfx}_{p['isa']}", "float32" if sfx else "int8"


def _macros(p: dict):
    """The driver's pieces: the per-row preparation (tables, or the AMX kernel's int8 activations), after the
    RMSNorm or SwiGLU prologue when there is one, and the matmul of one schedule (knobs: kernel, threads, split,
    rows, mblock, tiles). ``kernel`` is a Python string: each branch of the dispatch names its C functions."""
    from ..tvmscript import T

    k, k_pad, runs, groups = p["k"], p["k_pad"], p["runs"], p["groups"]
    tiles, n_pad, bits, gs = p["n_pad"] // 64, p["n_pad"], p["bits"], p["k_pad"] // p["groups"]
    norm, eps, swiglu = f"lutc_rmsnorm_{p['isa']}", float(p.get("eps", 0.0)), f"lutc_swiglu_{p['isa']}"
    prologue, offsets = p.get("prologue", "none"), bool(p.get("offsets"))

    def prepare(kernel, src, row, m, TAB, TSC, XS):
        pre = _names(p, kernel)[0]
        if kernel in INT8_KERNELS:  # int8 activations, stored by group for all rows (lut_amx_kernels.c)
            return T.call_extern("int32", pre, src, T.int64(k), T.int64(k_pad), T.int64(gs), TAB.data, _i64(row),
                                 _i64(m), T.address_of(TSC[row, 0]), T.address_of(XS[row, 0]))
        return T.call_extern("int32", pre, src, T.int64(k), T.int64(k_pad), T.int64(gs),
                             T.address_of(TAB[row, 0, 0]), T.address_of(TSC[row, 0]), T.address_of(XS[row, 0]))

    def prologue_call(row, X, NW, dst):
        if prologue == "rms_norm":
            return T.call_extern("int32", norm, T.address_of(X[row, 0]), NW.data, T.int64(k), T.float32(eps), dst)
        return T.call_extern("int32", swiglu, T.address_of(X[row, 0]), T.int64(k), dst)

    def rows_of(t, threads, m):
        return _ranges(t, threads, "m", m, tiles)[2:]

    pre_names = _names(p, "lut")[0] + {"none": "", "rms_norm": f" (or {norm})", "swiglu": f" (or {swiglu})"}[prologue]
    prep_refused = {"lut": refused(pre_names, "a group that is not a multiple of 4 K or does not divide the padded K")}
    prep_refused.update(dict.fromkeys(INT8_KERNELS, refused(_names(p, "amx")[0], "a group that is not a multiple "
                                                            "of 16 K or a row outside the call")))
    check = checked_slots()

    @T.macro
    def prep_row(kernel, row, m, X, NW, scratch, TAB, TSC, XS, RC, slot):
        if prologue == "none":
            RC[slot] = RC[slot] | prepare(kernel, T.address_of(X[row, 0]), row, m, TAB, TSC, XS)
        else:
            RC[slot] = RC[slot] | prologue_call(row, X, NW, scratch)
            RC[slot] = RC[slot] | prepare(kernel, scratch, row, m, TAB, TSC, XS)

    # every call's return code is kept (checked_tasks says why in slots): the error raised names the C kernel
    @T.macro
    def prep_serial(kernel, m, X, NW, SCR, TAB, TSC, XS):
        RC = T.alloc_buffer((1,), "int32")
        RC[0] = 0
        for row in range(m):
            prep_row(kernel, row, m, X, NW, SCR.data, TAB, TSC, XS, RC, 0)
        check(RC, 1, prep_refused[kernel])

    # rows are independent: past PARALLEL_PREP_ROWS they are split over the pool, each task with its own scratch
    # row (tables for 128 rows of 1536 took 200 us on one thread: a third of a SmolLM2 down projection's prefill)
    @T.macro
    def prep(kernel, threads, m, X, NW, SCR, TAB, TSC, XS):
        if isinstance(threads, int) and threads == 1:
            prep_serial(kernel, m, X, NW, SCR, TAB, TSC, XS)
        elif m <= PARALLEL_PREP_ROWS:
            prep_serial(kernel, m, X, NW, SCR, TAB, TSC, XS)
        else:
            RC = T.alloc_buffer((threads,), "int32")
            for t in T.parallel(threads):
                RC[t] = 0
                ROW = T.alloc_buffer((k,), "float32")
                for row in range(rows_of(t, threads, m)[0], rows_of(t, threads, m)[1]):
                    prep_row(kernel, row, m, X, NW, ROW.data, TAB, TSC, XS, RC, t)
            check(RC, threads, prep_refused[kernel])

    def ranges(kernel, t, threads, split, m):
        return _ranges(t, threads, split, m, tiles, AMX_ROWS if kernel == "amx" else 1)

    def matmul_call(t, kernel, m, TAB, TSC, XS, W, S, Z, Y, threads, split, rows, mblock, tiles_per_pass):
        r = ranges(kernel, t, threads, split, m)
        return T.call_extern("int32", _names(p, kernel)[1], TAB.data, TSC.data, XS.data, W.data, S.data, Z.data,
                             Y.data, m, T.int64(n_pad), T.int64(runs), T.int64(groups), T.int64(bits), *r, _i64(rows),
                             _i64(mblock), _i64(tiles_per_pass))

    def offsets_call(t, kernel, m, XS, S, Y, threads, split):
        """The offsets of real-valued zero points (layout.py: after the scales in S) added to the task's part of y."""
        return T.call_extern("int32", f"lutc_offsets_{p['isa']}", XS.data, T.address_of(S[tiles, 0, 0]), Y.data, m,
                             T.int64(n_pad), T.int64(groups), *ranges(kernel, t, threads, split, m))

    matmul_refused = {kern: refused(_names(p, kern)[1] + (f" (or lutc_offsets_{p['isa']})" if offsets else ""),
                                    "rows or tiles outside the call, groups that do not divide "
                                    "the padded K, or a tiles-per-pass count other than 1, 2 or 4" +
                                    (", or no AMX permission" if kern == "amx" else ""))
                      for kern in ("lut", *INT8_KERNELS)}

    @T.macro
    def lookups(kernel, m, TAB, TSC, XS, W, S, Z, Y, threads, split, rows, mblock, tiles_per_pass):
        RC = T.alloc_buffer((threads,), "int32")
        for t in _loop(threads):
            RC[t] = matmul_call(t, kernel, m, TAB, TSC, XS, W, S, Z, Y, threads, split, rows, mblock, tiles_per_pass)
            if offsets:   # after the matmul wrote the task's part of y
                RC[t] = RC[t] | offsets_call(t, kernel, m, XS, S, Y, threads, split)
        check(RC, threads, matmul_refused[kernel])

    return prep, lookups


def _prim_funcs(p: dict, tune: bool = False) -> dict:
    """``main`` (dispatching on the row count to the schedule's knobs), and with ``tune`` a ``tune`` entry point
    taking the knobs as arguments (kernel: its index in KERNELS, 0=lut 1=amx 2=vnni 3=madd; threads, split 0=n 1=m, rows,
    mblock, tiles).

    Arguments: x, [norm weight,] [scratch,] tables, table scales, xsum, weights, scales, zeros, y[, knobs]: the
    norm weight and a scratch row with an RMSNorm prologue, a scratch row with a SwiGLU prologue (whose x rows
    are [gate | up], 2k wide)."""
    from ..tvmscript import T

    k, runs, groups, tb, n_pad, tiles = p["k"], p["runs"], p["groups"], p["tile_bytes"], p["n_pad"], p["n_pad"] // 64
    srows = 2 * tiles if p.get("offsets") else tiles   # the offsets of real-valued zero points after the scales
    tdt = _names(p)[2]
    prep, lookups = _macros(p)
    sched = p.get("schedule") or default_schedule(p["isa"], p.get("table", "int8"), p["threads"])
    b0, b1, b2, b3 = (tuple({**OLDER_DEFAULTS, **b}[kn] for kn in KNOBS) for b in sched)
    lim = [hi for _, hi in BUCKETS[:-1]]
    # the tuning entry point's kernel knob: where the int8 kernels cannot be linked, 1 and 2 run the lookups too
    amx, vnni, madd = (kern if p.get("table", "int8") == "int8" and INT8_KERNEL_ISA[kern] == p["isa"] else "lut"
                       for kern in INT8_KERNELS)

    @T.macro
    def run(kb, m, X, NW, SCR, TAB, TSC, XS, W, S, Z, Y):
        prep(kb[0], kb[1], m, X, NW, SCR, TAB, TSC, XS)
        lookups(kb[0], m, TAB, TSC, XS, W, S, Z, Y, kb[1], kb[2], kb[3], kb[4], kb[5])

    @T.macro
    def dispatch(m, X, NW, SCR, TAB, TSC, XS, W, S, Z, Y):
        if m <= lim[0]:
            run(b0, m, X, NW, SCR, TAB, TSC, XS, W, S, Z, Y)
        elif m <= lim[1]:
            run(b1, m, X, NW, SCR, TAB, TSC, XS, W, S, Z, Y)
        elif m <= lim[2]:
            run(b2, m, X, NW, SCR, TAB, TSC, XS, W, S, Z, Y)
        else:
            run(b3, m, X, NW, SCR, TAB, TSC, XS, W, S, Z, Y)

    # one parse per library: TVMScript parsing is what a cold build spends most of its time on
    def plain():
        @T.prim_func
        def main(x: T.handle, tab: T.handle, tsc: T.handle, xs: T.handle, w: T.handle, s: T.handle, z: T.handle,
                 y: T.handle):
            T.func_attr({"global_symbol": "main"})
            m = T.int64()
            X = T.match_buffer(x, (m, k), "float32")
            TAB = T.match_buffer(tab, (m, runs, 16), tdt)
            TSC = T.match_buffer(tsc, (m, groups), "float32")
            XS = T.match_buffer(xs, (m, groups), "float32")
            W = T.match_buffer(w, (tiles, tb), "uint8")
            S = T.match_buffer(s, (srows, groups, 64), "uint16")
            Z = T.match_buffer(z, (tiles, groups, 64), "int8")
            Y = T.match_buffer(y, (m, n_pad), "float32")
            dispatch(m, X, X, X, TAB, TSC, XS, W, S, Z, Y)  # no norm weight, no scratch row: X stands in, unread

        return main

    def norm():
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
            W = T.match_buffer(w, (tiles, tb), "uint8")
            S = T.match_buffer(s, (srows, groups, 64), "uint16")
            Z = T.match_buffer(z, (tiles, groups, 64), "int8")
            Y = T.match_buffer(y, (m, n_pad), "float32")
            dispatch(m, X, NW, SCR, TAB, TSC, XS, W, S, Z, Y)

        return main_norm

    def swiglu():
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
            W = T.match_buffer(w, (tiles, tb), "uint8")
            S = T.match_buffer(s, (srows, groups, 64), "uint16")
            Z = T.match_buffer(z, (tiles, groups, 64), "int8")
            Y = T.match_buffer(y, (m, n_pad), "float32")
            dispatch(m, X, X, SCR, TAB, TSC, XS, W, S, Z, Y)  # X stands in for the norm weight, unread

        return main_swiglu

    fns = {"main": {"none": plain, "rms_norm": norm, "swiglu": swiglu}[p.get("prologue", "none")]()}
    if not tune:
        return fns

    @T.macro
    def tune_run(kernel, m, X, TAB, TSC, XS, W, S, Z, Y, nt, split, rows, mblock, tpp):
        if nt == 1:
            prep(kernel, 1, m, X, X, X, TAB, TSC, XS)
            lookups(kernel, m, TAB, TSC, XS, W, S, Z, Y, 1, split, rows, mblock, tpp)
        else:
            prep(kernel, nt, m, X, X, X, TAB, TSC, XS)
            lookups(kernel, m, TAB, TSC, XS, W, S, Z, Y, nt, split, rows, mblock, tpp)

    @T.prim_func
    def tune_fn(x: T.handle, tab: T.handle, tsc: T.handle, xs: T.handle, w: T.handle, s: T.handle, z: T.handle,
                y: T.handle, kern: T.int64, nt: T.int64, split: T.int64, rows: T.int64, mblock: T.int64,
                tpp: T.int64):
        T.func_attr({"global_symbol": "tune"})
        m = T.int64()
        X = T.match_buffer(x, (m, k), "float32")
        TAB = T.match_buffer(tab, (m, runs, 16), tdt)
        TSC = T.match_buffer(tsc, (m, groups), "float32")
        XS = T.match_buffer(xs, (m, groups), "float32")
        W = T.match_buffer(w, (tiles, tb), "uint8")
        S = T.match_buffer(s, (srows, groups, 64), "uint16")
        Z = T.match_buffer(z, (tiles, groups, 64), "int8")
        Y = T.match_buffer(y, (m, n_pad), "float32")
        if kern == 1:
            tune_run(amx, m, X, TAB, TSC, XS, W, S, Z, Y, nt, split, rows, mblock, tpp)
        elif kern == 2:
            tune_run(vnni, m, X, TAB, TSC, XS, W, S, Z, Y, nt, split, rows, mblock, tpp)
        elif kern == 3:
            tune_run(madd, m, X, TAB, TSC, XS, W, S, Z, Y, nt, split, rows, mblock, tpp)
        else:
            tune_run("lut", m, X, TAB, TSC, XS, W, S, Z, Y, nt, split, rows, mblock, tpp)

    fns["tune"] = tune_fn
    return fns


def build_library(params: dict, tune: bool = False) -> Path:
    """The path of a shared library whose ``main`` computes the LUT matmul for ``params`` (with ``tune``, also a
    ``tune`` entry point taking the schedule knobs as arguments: what the tuner times)."""
    lib = cache_dir() / f"lut_{'tune' if tune else 'matmul'}_{_key(params)}.so"
    return lib if lib.exists() else export(lambda: _prim_funcs(params, tune), params["isa"],
                                           sources_for(params["isa"]), lib)


def export(functions, isa: str, sources, lib: Path) -> Path:
    """Compile the TIR ``functions()`` (name -> prim_func) for ``isa``, link the C ``sources`` in, and write
    ``lib`` atomically (a concurrent builder never sees half a library). An ISA of another machine (neon on
    x86_64) is cross-compiled: the library is for that machine and cannot be loaded here."""
    import tvm

    objs = [str(_object(isa, src)) for src in _sources(sources)]
    exe = tvm.compile(tvm.IRModule(functions()), target=tvm.target.Target(llvm_target(isa)))
    part = lib.with_name(f".{lib.stem}.{os.getpid()}.tmp.so")
    cross = {} if native(isa) else {"cc": c_compiler(isa)}
    exe.export_library(str(part), addons=objs, **cross)
    os.replace(part, lib)
    return lib
