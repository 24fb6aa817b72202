"""The compiler's side of the ISA choice: gcc flags per micro-kernel variant (detection: runtime/isa.py)."""
from ...runtime.isa import ISAS, best_isa, cpu_flags, supported  # noqa: F401 (re-exported)

GCC_FLAGS = {"avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma", "-mf16c", "-DLUTC_ISA=512"],
             "avx2": ["-mavx2", "-mfma", "-mf16c", "-DLUTC_ISA=256"], "generic": ["-DLUTC_ISA=0"]}
# sources compiled only into the libraries of ISAs that can hold them, with their own flags on top
# (-O2 after the -O3: at -O3 gcc 12 doubles the VNNI kernel's inner loop with register copies, lut_vnni_kernels.c)
SOURCE_FLAGS = {"lut_amx_kernels.c": ["-mamx-tile", "-mamx-int8"], "lut_vnni_kernels.c": ["-mavx512vnni", "-O2"]}
