"""The compiler's side of the ISA choice: per micro-kernel variant, the gcc flags, the LLVM target of the TVM driver,
and the C compiler (a cross compiler for an ISA of another machine: aarch64 NEON libraries build on x86_64 with
Debian's gcc-aarch64-linux-gnu). Detection: runtime/isa.py."""
import shutil

from ...runtime.isa import ARCH, ISAS, best_isa, cpu_flags, host_arch, supported  # noqa: F401 (re-exported)

GCC_FLAGS = {"avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma", "-mf16c", "-DLUTC_ISA=512"],
             "avx2": ["-mavx2", "-mfma", "-mf16c", "-DLUTC_ISA=256"], "neon": ["-march=armv8-a", "-DLUTC_ISA=128"],
             "generic": ["-DLUTC_ISA=0"]}
# sources compiled only into the libraries of ISAs that can hold them, with their own flags on top
# (-O2 after the -O3: at -O3 gcc 12 doubles the VNNI kernel's inner loop with register copies, lut_vnni_kernels.c)
SOURCE_FLAGS = {"lut_amx_kernels.c": ["-mamx-tile", "-mamx-int8"], "lut_vnni_kernels.c": ["-mavx512vnni", "-O2"]}
_LLVM = {"avx512": {"mcpu": "skylake-avx512"}, "avx2": {"mcpu": "haswell"},
         "neon": {"mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}}
_GENERIC_LLVM = {"x86_64": {"mcpu": "x86-64"}}


def arch_of(isa: str) -> str:
    """The machine an ``isa`` library is built for (the generic kernels: this one)."""
    return ARCH[isa] or host_arch()


def native(isa: str) -> bool:
    """Whether ``isa`` libraries are for this machine (else they are cross-compiled and cannot load here)."""
    return arch_of(isa) == host_arch()


def llvm_target(isa: str) -> dict:
    """The TVM target (a dict) of the driver of an ``isa`` library."""
    extra = _LLVM.get(isa) or _GENERIC_LLVM.get(host_arch(), {})
    return {"kind": "llvm", **extra}


def c_compiler(isa: str) -> str:
    """The gcc that builds ``isa`` micro-kernels and links the library: the host's, or ARCH-linux-gnu-gcc for
    another machine's (a RuntimeError says how to get it where it is missing)."""
    if native(isa):
        return "gcc"
    arch = arch_of(isa)
    cross = f"{arch}-linux-gnu-gcc"
    if shutil.which(cross) is None:
        raise RuntimeError(f"building {isa} kernels on this {host_arch()} machine needs the cross compiler {cross} "
                           f"(Debian/Ubuntu: apt install gcc-{arch}-linux-gnu)")
    return cross
