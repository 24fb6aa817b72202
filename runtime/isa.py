"""Host instruction-set detection: which micro-kernel variant a CPU can run (the compiler picks one, the
runtime refuses an artifact built for an ISA this CPU lacks)."""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

ISAS = ("avx512", "avx2", "neon", "generic")  # best first
_NEEDS = {"avx512": {"avx512f", "avx512bw", "avx512vl", "f16c"}, "avx2": {"avx2", "fma", "f16c"}, "neon": set(),
          "generic": set()}
# the machine each ISA's code runs on (None: any; the generic kernels are built for the host's): AArch64 always has
# Advanced SIMD (NEON), so "neon" needs no feature flag
ARCH = {"avx512": "x86_64", "avx2": "x86_64", "neon": "aarch64", "generic": None}
_MACHINES = {"x86_64": "x86_64", "AMD64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def host_arch() -> str:
    """This machine's architecture in lutc's terms ("x86_64", "aarch64", or what platform.machine() says)."""
    return _MACHINES.get(platform.machine(), platform.machine())


CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo(field: str, path: Path = CPUINFO) -> str | None:
    """The first CPU's ``field`` line of /proc/cpuinfo (None where there is none)."""
    try:
        with open(path) as f:
            pairs = (line.split(":", 1) for line in f if ":" in line)
            # exact key: "model" must not match "model name"
            return next((value.strip() for key, value in pairs if key.strip() == field), None)
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    return frozenset((_cpuinfo("flags") or "").split())


@functools.lru_cache(maxsize=1)
def cpu_id(path: Path = CPUINFO) -> str:
    """This CPU's vendor, family and model, e.g. "AuthenticAMD 25 1" (Zen 3) or "AuthenticAMD 25 17" (Zen 4): the
    tuner's cache keys carry it, so one kind of core's measured choice is not served to another
    (codegen/cpu/tune.py). The model is part of it because one family spans core generations (AMD's 25 is Zen 3
    and Zen 4: AVX2-only and AVX-512 cores). Empty where /proc/cpuinfo has none of them."""
    return " ".join(v for v in (_cpuinfo(field, path) for field in ("vendor_id", "cpu family", "model")) if v)


def supported(isa: str, flags: frozenset[str] | None = None) -> bool:
    if isa not in _NEEDS:
        raise ValueError(f"unknown ISA {isa!r}; known: {ISAS}")
    if ARCH[isa] not in (None, host_arch()):
        return False
    return _NEEDS[isa] <= (cpu_flags() if flags is None else flags)


def best_isa() -> str:
    return next(isa for isa in ISAS if supported(isa))


ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA = 0x1023, 18
SYS_ARCH_PRCTL = 158  # x86_64


@functools.lru_cache(maxsize=1)
def amx_usable() -> bool:
    """Whether this process may run AMX int8 tile instructions: the CPU has them (amx_tile, amx_int8, and the
    AVX-512 the kernel's other half needs) and Linux grants the tile state (arch_prctl ARCH_REQ_XCOMP_PERM, asked
    once for the whole process; without it the first tile instruction kills the process)."""
    if not supported("avx512") or not {"amx_tile", "amx_int8"} <= cpu_flags() or platform.system() != "Linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


def vnni_usable() -> bool:
    """Whether the AVX-512 VNNI kernel (lut_vnni_kernels.c: vpdpbusd) runs here."""
    return supported("avx512") and "avx512_vnni" in cpu_flags()


def madd_usable() -> bool:
    """Whether the AVX2 int8 kernel (lut_madd_kernels.c: vpmaddubsw) runs here."""
    return supported("avx2")


# the library each int8 kernel is compiled into (codegen/cpu/build.py): an AVX-512 host runs AVX-512 libraries
INT8_KERNEL_ISA = {"amx": "avx512", "vnni": "avx512", "madd": "avx2"}


def int8_kernels(isa: str | None = None) -> tuple[str, ...]:
    """The many-row int8-activation kernels this host runs, best first (codegen/cpu/schedule.py INT8_KERNELS);
    with ``isa``, those an ``isa`` library holds."""
    return tuple(k for k, usable in (("amx", amx_usable), ("vnni", vnni_usable), ("madd", madd_usable))
                 if (isa is None or INT8_KERNEL_ISA[k] == isa) and usable())


def kernel_usable(kernel: str) -> bool:
    """Whether a schedule's ``kernel`` knob ("lut", "amx", "vnni", "madd") names code this host runs."""
    return kernel == "lut" or kernel in int8_kernels()


def describe_host() -> str:
    """One line for benchmark reports: the CPU model, its core count and the kernels it runs (results from
    different machines must not be compared as if they were one)."""
    name = _cpuinfo("model name") or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{name}, {cores} cores, best ISA {best_isa()}, int8 kernels for many rows: "
            f"{', '.join(int8_kernels()) or 'none (the lookups)'}")


CACHE_INFO = Path("/sys/devices/system/cpu/cpu0/cache")
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def last_level_cache_bytes(default: int = 256 << 20, root: Path = CACHE_INFO) -> int:
    """The largest CPU cache this host reports (sysfs ``index*/size``, e.g. "480M"), or ``default``. Benchmarks and
    the tuner read twice this much to get weights out of the caches (the development VMs report a 480 MiB L3;
    streaming reads there run at 56 GB/s up to 128 MiB and 31 GB/s from 256 MiB on)."""
    sizes = []
    for f in root.glob("index*/size"):
        try:
            text = f.read_text().strip()
            sizes.append(int(text[:-1]) * _UNITS[text[-1]] if text[-1:] in _UNITS else int(text))
        except (OSError, ValueError):
            continue
    return max(sizes, default=default)
