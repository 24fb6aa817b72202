"""Host instruction-set detection: which micro-kernel variant a CPU can run (the compiler picks one, the
runtime refuses an artifact built for an ISA this CPU lacks)."""
from __future__ import annotations

import functools
import platform

ISAS = ("avx512", "avx2", "generic")  # best first
_NEEDS = {"avx512": {"avx512f", "avx512bw", "avx512vl", "f16c"}, "avx2": {"avx2", "fma", "f16c"}, "generic": set()}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def supported(isa: str, flags: frozenset[str] | None = None) -> bool:
    if isa not in _NEEDS:
        raise ValueError(f"unknown ISA {isa!r}; known: {ISAS}")
    if isa != "generic" and platform.machine() not in ("x86_64", "AMD64"):
        return False
    return _NEEDS[isa] <= (cpu_flags() if flags is None else flags)


def best_isa() -> str:
    return next(isa for isa in ISAS if supported(isa))
