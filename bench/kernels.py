"""LUT matmul kernels against their peers, side by side in one process, interleaved, cold weights.

    python -m lutc.bench.kernels [--shapes 4096x4096,...] [--m 1,8,32,128] [--threads 1,2] [--bits 2,3,4,ternary]
                                 [--f32-bits 2,4] [--tune both|on|off] [--quick]

lutc rows: int8 tables (``lutc W2``; from 9 rows on AMX hosts the AMX kernel), float tables (``lutc W2 f32``,
bits from ``--f32-bits``), the table lookups forced for every row count (``lutc W2 lookups``, bits from
``--lookup-bits``) and, with ``--tune both`` (the default), the tuned schedule next to the heuristic one
(``lutc W2 tuned``; tuning happens at build time for the cell's row bucket and is cached in ~/.cache/lutc/tune). ``--quick`` is a smoke run
(one small shape, few rounds, results named ``kernels_quick``): its timings mean nothing.

Peers: torch fp32 ``F.linear``, onnxruntime ``MatMulNBits`` 4- and 2-bit (accuracy_level 4; 2-bit also with
``mlas.use_lut_gemm=1``), and llama.cpp's ggml kernels (``--ggml q2_K,tq2_0,q4_0``; optional: needs
llama-cpp-python, see ``bench/ggml_peer.py``). Each method owns enough copies of its weights to cover ``--cold-mb`` (more than the
L3), and one timed sample is a sweep over all copies divided by their number, so weights come from DRAM as in
a real model. Methods run in rounds, one sample each per round; the table reports medians over rounds, the
effective weight bandwidth, % of the read-bandwidth roofline measured in the same run, and ratios. The ``read
floor`` row (``--no-read-floor`` leaves it out) only reads the first lutc row's bytes, cold, in this process: a
cell's ``% floor`` is what its reads allowed, where the roofline's 512 MiB stream overstates a cold read of a few MiB.
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from lutc.runtime.isa import describe_host, last_level_cache_bytes

# The read loop of the probe and of the read floor: 4 streams per thread, the widest loads, a prefetch. The read
# floor runs it in process over a cell's weight bytes (OpenMP threads as many as the cell's, the kernels' cold
# rotation): what a kernel could reach if its compute were free. The probe's 512 MiB stream overstates what a cold
# read of a few MiB reaches on the VMs here (AMD Zen 3, 2 threads: 4 MiB cold, 4 streams per thread: 26-28 GB/s;
# one stream per thread: 18-22; the 512 MiB probe: 36.7).
READ = r"""
#include <omp.h>
/* 64-byte vectors of gcc's vector extension (one zmm load on AVX-512, two ymm on AVX2, four q registers on NEON),
 * any alignment: a model's weight arrays too */
typedef long long v8 __attribute__((vector_size(64), aligned(1)));
long long lutc_bench_read(const char* a, long n, int threads) {
  long long sink = 0;
  #pragma omp parallel num_threads(threads) reduction(+:sink)
  {
    int nt = omp_get_num_threads(), id = omp_get_thread_num();
    long chunk = n / nt / 4 / 256 * 256, base = id * chunk * 4;
    v8 s0 = {0}, s1 = s0, s2 = s0, s3 = s0;
    for (long i = 0; i < chunk; i += 256)
      for (int u = 0; u < 256; u += 64) {
        __builtin_prefetch(a + base + i + u + 2048);
        s0 += *(const v8*)(a + base + i + u);
        s1 += *(const v8*)(a + base + chunk + i + u);
        s2 += *(const v8*)(a + base + 2 * chunk + i + u);
        s3 += *(const v8*)(a + base + 3 * chunk + i + u);
      }
    v8 s = s0 + s1 + s2 + s3;
    for (int l = 0; l < 8; l++) sink += s[l];
  }
  return sink;
}
"""
# the probe: the best of `reps` reads of one buffer of n bytes, OMP_NUM_THREADS threads
STREAM = READ + r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
int main(int argc, char** argv) {
  long n = atol(argv[1]); int reps = atoi(argv[2]);
  char* a = aligned_alloc(64, n);
  #pragma omp parallel for
  for (long i = 0; i < n; i += 4096) a[i] = 1;
  for (long i = 0; i < n; i++) a[i] = (char)i;
  double best = 1e30; long long sink = 0;
  for (int r = 0; r < reps; r++) {
    double t = now();
    sink += lutc_bench_read(a, n, omp_get_max_threads());
    t = now() - t; if (t < best) best = t;
  }
  printf("%.3f %lld\n", (double)n / best / 1e9, sink);
  return 0;
}
"""
READ_NAME = "read floor"


@functools.lru_cache(maxsize=1)
def read_library():
    """``read(array, threads)``: reads the array's bytes (whole 1 KiB steps per thread) with READ's loop; None
    without gcc. Built once per process."""
    import ctypes

    cc = shutil.which("gcc")
    if cc is None:
        return None
    d = Path(tempfile.mkdtemp(prefix="lutc_read_"))
    (d / "read.c").write_text(READ)
    subprocess.run([cc, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", str(d / "read.c"), "-o",
                    str(d / "read.so")], check=True)
    lib = ctypes.CDLL(str(d / "read.so"))
    shutil.rmtree(d, ignore_errors=True)   # mapped: the file is no longer needed
    lib.lutc_bench_read.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_int]
    lib.lutc_bench_read.restype = ctypes.c_longlong

    def read(a: np.ndarray, threads: int) -> None:
        lib.lutc_bench_read(a.ctypes.data, a.nbytes, threads)
    return read


def read_method(nbytes: int, threads: int, cold_mb: int):
    """A method that only reads ``nbytes`` per call (rotating copies like the kernels'); None without gcc."""
    read = read_library()
    if read is None:
        return None
    bufs = [np.full(nbytes, i, np.uint8) for i in range(copies_for(nbytes, cold_mb))]
    return Method(READ_NAME, nbytes, [lambda b=b: read(b, threads) for b in bufs])


def read_bandwidth(threads: int, mib: int = 512, reps: int = 8) -> float:
    """GB/s of the best streaming read we can write (gcc -O3 -march=native, OpenMP), over ``mib`` MiB."""
    cc = shutil.which("gcc")
    if cc is None:
        return float("nan")
    with tempfile.TemporaryDirectory() as d:
        src, exe = Path(d) / "stream.c", Path(d) / "stream"
        src.write_text(STREAM)
        subprocess.run([cc, "-O3", "-march=native", "-fopenmp", str(src), "-o", str(exe)], check=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_PROC_BIND="spread")
        out = subprocess.run([str(exe), str(mib << 20), str(reps)], capture_output=True, text=True, env=env)
        return float(out.stdout.split()[0])


class Method:
    """A named callable over rotating weight copies; ``sample()`` is one sweep, in seconds per matmul."""

    def __init__(self, name: str, nbytes: int, calls: list, per_sweep: int | None = None, close=None):
        self.name, self.nbytes, self.calls = name, nbytes, calls
        self.per_sweep = per_sweep or len(calls)
        self.samples: list[float] = []
        self.close = close or (lambda: None)  # frees what the method holds outside Python's heap

    def sample(self) -> None:
        t = time.perf_counter()
        for c in self.calls:
            c()
        self.samples.append((time.perf_counter() - t) / self.per_sweep)


def copies_for(nbytes: int, cold_mb: int) -> int:
    return max(1, -(-(cold_mb << 20) // max(nbytes, 1)))


def lutc_method(w, bits, group, x, threads, cold_mb, table="int8", tune=False, kind=None):
    import lutc

    q = lutc.quantize_weight(w, lutc.QuantConfig(bits=bits, group_size=group, table_dtype=table))
    k = lutc.kernels.build_lut_matmul(q, m=x.shape[0], threads=threads, tune=tune, kind=kind)
    ks = [k] + [k.clone() for _ in range(copies_for(k.weight_bytes, cold_mb) - 1)]
    out = np.empty((x.shape[0], w.shape[0]), np.float32)
    err = rel_err(k(x), x.astype(np.float64) @ q.dequantize().T)
    name = lutc_name(bits, table, tune, kind)
    return Method(name, k.weight_bytes, [lambda k=k: k(x, out=out) for k in ks]), err


def lutc_name(bits, table="int8", tune=False, kind=None) -> str:
    return (f"lutc W{'t' if bits == 'ternary' else bits}" + (" f32" if table == "f32" else "") +
            (" tuned" if tune else "") + (" lookups" if kind == "lut" else ""))


def lutc_variants(args) -> list[tuple]:
    """(bits, table, tune, kind) of every lutc row: int8 tables (heuristic and/or tuned), float tables, then the
    lookups forced (where the heuristic would run the AMX kernel)."""
    tunes = {"off": (False,), "on": (True,), "both": (False, True)}[args.tune]
    out = [(b, "int8", t, None) for b in args.bits for t in tunes]
    return out + [(b, "f32", t, None) for b in args.f32_bits for t in tunes] + \
        [(b, "int8", False, "lut") for b in args.lookup_bits]


def torch_method(w, x, threads, cold_mb):
    import torch

    torch.set_num_threads(threads)
    wt = torch.from_numpy(w)
    ws = [wt] + [wt.clone() for _ in range(copies_for(w.nbytes, cold_mb) - 1)]
    xt = torch.from_numpy(x)
    return Method("torch fp32", w.nbytes, [lambda w=w: torch.nn.functional.linear(xt, w) for w in ws])


def ort_method(w, x, threads, cold_mb, bits, group, lut=False):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.capi import _pybind_state as C

    n, k = w.shape
    blocks = -(-k // group)
    packed = np.zeros((n, blocks, group * bits // 8), np.uint8)
    zp = np.zeros((n, -(-blocks // (8 // bits))), np.uint8)
    scales = np.zeros((n, blocks), np.float32)
    getattr(C, f"quantize_matmul_{bits}bits")(packed, np.ascontiguousarray(w.T), scales, zp, group, n, k, False)
    nbytes = packed.nbytes + scales.nbytes + zp.nbytes
    copies = copies_for(nbytes, cold_mb)
    inits, nodes, outs = [], [], []
    for i in range(copies):
        # onnxruntime shares initializers with equal contents: identical copies would be one cache-resident
        # weight (measured: 287 us instead of 611 us at 4096x4096 W2). Copy i > 0 gets its first bytes
        # (and scales' and zero points' lowest bits) flipped, so every copy is read from memory; copy 0 (the one
        # checked) stays exact.
        b, sc, z = (packed, scales, zp) if i == 0 else (_distinct(a, i) for a in (packed, scales, zp))
        inits += [numpy_helper.from_array(b, f"B{i}"), numpy_helper.from_array(sc, f"S{i}"),
                  numpy_helper.from_array(z, f"Z{i}")]
        nodes.append(helper.make_node("MatMulNBits", ["X", f"B{i}", f"S{i}", f"Z{i}"], [f"Y{i}"],
                                      domain="com.microsoft", K=k, N=n, bits=bits, block_size=group,
                                      accuracy_level=4))
        outs.append(helper.make_tensor_value_info(f"Y{i}", TensorProto.FLOAT, ["M", n]))
    graph = helper.make_graph(nodes, "peers", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", k])],
                              outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=10)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    if lut:
        so.add_session_config_entry("mlas.use_lut_gemm", "1")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    iob = sess.io_binding()
    iob.bind_input("X", "cpu", 0, np.float32, list(x.shape), x.ctypes.data)
    ys = [np.empty((x.shape[0], n), np.float32) for _ in range(copies)]
    for i, y in enumerate(ys):
        iob.bind_output(f"Y{i}", "cpu", 0, np.float32, list(y.shape), y.ctypes.data)
    sess.run_with_iobinding(iob)
    name = f"ort W{bits}" + (" lut" if lut else "")
    meth = Method(name, nbytes, [lambda: sess.run_with_iobinding(iob)], per_sweep=copies)
    meth.keep = (sess, iob, x, ys)  # the binding holds raw pointers: these must outlive it
    return meth


def ggml_method(w, x, threads, cold_mb, tname):
    """llama.cpp's kernel for ggml type ``tname`` (its quantizer, its activation quantization, its layout)."""
    from .ggml_peer import GgmlMatmul, ggml

    n, k = w.shape
    q = ggml().quantize(w, tname)
    copies = [q] + [q.copy() for _ in range(copies_for(q.nbytes, cold_mb) - 1)]
    mm = GgmlMatmul(copies, tname, n, k, x, threads)
    mm()
    err = rel_err(mm.result(), x.astype(np.float64) @ ggml().dequantize(q, tname, n, k).astype(np.float64).T)
    return Method(f"ggml {tname}", q.nbytes, [mm], per_sweep=len(copies), close=mm.close), err


TWO_BIT_GGML = ("ggml q2_K", "ggml tq2_0")


def _distinct(a: np.ndarray, i: int) -> np.ndarray:
    out = a.copy()
    raw = out.reshape(-1).view(np.uint8)
    n = min(8, raw.size)
    raw[:n] ^= np.frombuffer(np.int64(i).tobytes(), np.uint8)[:n]
    return out


def wake_up(seconds: float = 0.02) -> None:
    """Spin the CPU briefly: on the shared VMs here, the first ~20 ms after an idle pause run up to 20x slower
    (a numpy GEMV: 17 ms instead of 0.7 ms), which would land on whichever method comes after the pause."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class CacheEvictor:
    """Streams other weights through LUT GEMVs between timed calls (twice the last-level cache, at most 2 GiB), as
    the other layers of a model too big for the cache do: what the timed call reads next comes from DRAM, and the
    thread pool is as busy as in a model. (A numpy read of a buffer instead left one core idle, and the first
    parallel call after it ran up to 2x slower; a torch one left OpenMP threads spinning against the pool.)"""

    def __init__(self, threads: int, nbytes: int | None = None, n: int = 11008, k: int = 4096):
        import lutc

        nbytes = nbytes or min(2 * last_level_cache_bytes(), 2 << 30)
        rng = np.random.default_rng(99)
        q = lutc.quantize_weight(rng.standard_normal((n, k)).astype(np.float32), lutc.QuantConfig(bits=4))
        kern = lutc.kernels.build_lut_matmul(q, m=1, threads=threads)
        self.kernels = [kern] + [kern.clone() for _ in range(copies_for(kern.weight_bytes, nbytes >> 20) - 1)]
        self.x = rng.standard_normal((1, k)).astype(np.float32)

    def __call__(self) -> None:
        for kern in self.kernels:
            kern(self.x)


def _release_memory() -> None:
    """Collect the cell's reference cycles and hand freed heap pages back to the OS (glibc keeps them, and the
    next cell's different-sized copies fragment it: the full GEMV run once grew to 24 GB and was OOM-killed)."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _rss_mib() -> float:
    try:
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
    except (OSError, StopIteration):
        return float("nan")


def rel_err(y, ref) -> float:
    return float(np.abs(y - ref).max() / np.abs(ref).max())


def run_cell(shape, m, threads, args, rng) -> list[dict]:
    n, k = shape
    w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    methods, errs = [torch_method(w, x, threads, args.cold_mb)], {}
    for bits, table, tune, kind in lutc_variants(args):
        meth, errs[lutc_name(bits, table, tune, kind)] = lutc_method(
            w, "ternary" if bits == "ternary" else int(bits), args.group, x, threads, args.cold_mb, table, tune, kind)
        methods.append(meth)
    if args.read_floor and len(methods) > 1:  # as many bytes as the first lutc row reads
        floor = read_method(methods[1].nbytes, threads, args.cold_mb)
        methods += [floor] if floor else []
    for bits, lut in ((4, False), (2, False), (2, True)):
        try:
            methods.append(ort_method(w, x, threads, args.cold_mb, bits, args.group, lut))
        except Exception as e:  # a peer that is missing in this build is reported, not fatal
            print(f"  ort W{bits}{' lut' if lut else ''}: skipped ({type(e).__name__}: {e})")
    for tname in args.ggml:
        try:
            meth, errs[f"ggml {tname}"] = ggml_method(w, x, threads, args.cold_mb, tname)
            methods.append(meth)
        except Exception as e:
            print(f"  ggml {tname}: skipped ({type(e).__name__}: {e})")
    for meth in methods:  # warm up: page in every copy, build thread pools
        meth.sample()
        meth.samples.clear()
    order = random.Random(0)
    for _ in range(args.rounds):  # interleaved: one sample of each method per round, in a new order each round
        for meth in order.sample(methods, len(methods)):  # (a fixed order gave W2 a 30% slower slot after torch)
            time.sleep(args.settle)  # let the previous runtime's spinning workers (OpenMP, ORT) go to sleep
            wake_up()
            meth.sample()
    rows = []
    for meth in methods:
        med = statistics.median(meth.samples)
        rows.append({"N": n, "K": k, "M": m, "threads": threads, "method": meth.name, "us": med * 1e6,
                     "p10_us": float(np.percentile(meth.samples, 10)) * 1e6,
                     "p90_us": float(np.percentile(meth.samples, 90)) * 1e6, "bytes": meth.nbytes,
                     "GBps": meth.nbytes / med / 1e9, "err": errs.get(meth.name)})
        meth.close()
    return rows


def report(rows, bw, args) -> str:
    lines = ["# LUT matmul kernels vs peers", "", f"Host: {describe_host()}.", "",
             f"Read-bandwidth roofline (best streaming read, measured in this run): " +
             ", ".join(f"{t} thread{'s' if t > 1 else ''}: {v:.1f} GB/s" for t, v in bw.items()),
             f"Cold weights: each method rotates over >= {args.cold_mb} MiB of weight copies (onnxruntime's "
             "differ in their first bytes: it shares equal initializers). Medians of "
             f"{args.rounds} interleaved rounds. Group size {args.group}. `% roof` = (weight bytes / time) / read BW.",
             f"`{READ_NAME}`: the first lutc row's bytes only read (the probe's loop, cold copies, in this process); "
             "`% floor` = a row's GB/s / the floor's: what the cell's reads allow, where the roofline's long "
             "stream overstates a cold read of a few MiB.",
             "`vs untuned`: a tuned row's speed-up over the heuristic schedule of the same kernel.",
             "`vs best 2-bit peer`: against the fastest of onnxruntime W2 (plain and LUT) and llama.cpp q2_K / tq2_0.",
             "", "| N | K | M | thr | method | µs | p10–p90 | GB/s | % roof | % floor | vs torch | vs best 2-bit peer | vs ort W4 "
             "| vs ggml tq2_0 | vs untuned | err |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    cells = {}
    for r in rows:
        cells.setdefault((r["N"], r["K"], r["M"], r["threads"]), []).append(r)
    for (n, k, m, t), rs in cells.items():
        by = {r["method"]: r["us"] for r in rs}
        ort2 = min((v for name, v in by.items() if name.startswith("ort W2") or name in TWO_BIT_GGML), default=None)
        floor = next((r["GBps"] for r in rs if r["method"] == READ_NAME), None)
        for r in rs:
            vs = lambda ref: f"{ref / r['us']:.2f}×" if ref and r["method"] != READ_NAME else "-"
            err = "-" if r["err"] is None else f"{r['err']:.1e}"
            of_floor = f"{100 * r['GBps'] / floor:.0f}%" if floor else "-"
            lines.append(f"| {n} | {k} | {m} | {t} | {r['method']} | {r['us']:.0f} | {r['p10_us']:.0f}–{r['p90_us']:.0f} "
                         f"| {r['GBps']:.1f} | {100 * r['GBps'] / bw[t]:.0f}% | "
                         f"{of_floor} | {vs(by.get('torch fp32'))} | "
                         f"{vs(ort2)} | {vs(by.get('ort W4'))} | {vs(by.get('ggml tq2_0'))} | "
                         f"{vs(by.get(r['method'][:-len(' tuned')]) if r['method'].endswith(' tuned') else None)} | {err} |")
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    """One panel per row count M: µs of every method per (shape, threads) cell, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = sorted({r["M"] for r in rows})
    cells = sorted({(r["N"], r["K"], r["threads"]) for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(len(ms), 1, figsize=(max(6, 1.6 * len(cells)), 4 * len(ms)), squeeze=False)
    width = 0.8 / len(methods)
    for ax, m in zip(axes[:, 0], ms):
        for i, meth in enumerate(methods):
            vals = [next((r["us"] for r in rows if (r["N"], r["K"], r["threads"]) == c and r["method"] == meth
                          and r["M"] == m), np.nan) for c in cells]
            ax.bar(np.arange(len(cells)) + i * width, vals, width, label=meth)
        ax.set_xticks(np.arange(len(cells)) + 0.4 - width / 2, [f"{n}x{k}\n{t} thr" for n, k, t in cells])
        ax.set_ylabel(f"µs per matmul (M={m}, cold weights)")
        ax.set_yscale("log")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="4096x4096,11008x4096,4096x11008,14336x4096")
    ap.add_argument("--m", default="1,8,32,128")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--bits", default="2,3,4,ternary", help="lutc int8-table rows")
    ap.add_argument("--f32-bits", default="2,4", help="lutc float-table rows ('' for none)")
    ap.add_argument("--lookup-bits", default="", help="lutc rows with the table lookups forced (next to AMX)")
    ap.add_argument("--tune", default="both", choices=["off", "on", "both"], help="lutc schedules: heuristic, tuned, both")
    ap.add_argument("--quick", action="store_true", help="smoke run: one small shape, 2 rounds (timings mean nothing)")
    ap.add_argument("--ggml", default="q2_K,tq2_0,q4_0", help="llama.cpp peers (ggml types; '' for none)")
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--cold-mb", type=int, default=256)
    ap.add_argument("--settle", type=float, default=0.3, help="seconds of pause before each sample")
    ap.add_argument("--no-read-floor", dest="read_floor", action="store_false",
                    help="leave out the read-floor row (a plain read of the first lutc row's bytes)")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--name", default="kernels")
    args = ap.parse_args(argv)
    if args.quick:
        args.shapes, args.m, args.threads, args.rounds, args.cold_mb, args.settle = "512x512", "1,8", "1", 2, 8, 0.0
        args.name = "kernels_quick" if args.name == "kernels" else args.name
    args.bits = [b for b in args.bits.split(",") if b]
    args.ggml = [t for t in args.ggml.split(",") if t]
    args.f32_bits = [b for b in args.f32_bits.split(",") if b]
    args.lookup_bits = [b for b in args.lookup_bits.split(",") if b]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mib = 64 if args.quick else 512
    bw = {t: read_bandwidth(t, mib) for t in threads}
    print("read bandwidth:", {t: f"{v:.1f} GB/s" for t, v in bw.items()})
    rng = np.random.default_rng(0)
    rows = []
    for shape in shapes:
        for m in [int(v) for v in args.m.split(",")]:
            for t in threads:
                cell = run_cell(shape, m, t, args, rng)
                rows += cell
                _release_memory()  # gigabytes of a cell's weight copies, freed but kept by the allocators
                print(f"{shape} M={m} threads={t}: " + ", ".join(f"{r['method']} {r['us']:.0f}us" for r in cell)
                      + f" (RSS after the cell: {_rss_mib():.0f} MiB)", flush=True)
                (out / f"{args.name}.json").write_text(json.dumps({"bandwidth": bw, "rows": rows}, indent=1))
        bw.update({t: max(bw[t], read_bandwidth(t, mib)) for t in threads})  # re-probed between shapes: best seen
    (out / f"{args.name}.md").write_text(report(rows, bw, args))
    plot(rows, out / f"{args.name}.png")
    print(report(rows, bw, args))


if __name__ == "__main__":
    main()
