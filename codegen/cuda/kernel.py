"""The CUDA LUT matmul as a Python callable over torch CUDA tensors: checks its input, owns the device
weights and workspaces, builds (here, with nvcc) or finds the cached kernel library, and calls it."""
from __future__ import annotations

from ...passes.quantize.weight import QuantizedWeight
from . import dq, gemm, mma, wgmma
from .layout import CODE_LAYOUTS, ROWS, pack_cuda
from .tir import KernelParams, choose_cps

X_DTYPES = ("float16", "bfloat16", "float32")
Y_DTYPES = ("float32", "float16")
MAX_MT = 8
_DIRECT_TORCH = [True]   # tvm_ffi takes torch tensors as arguments (DLPack under the hood)


def arch_of_device(device=None) -> str:
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return "sm_90a" if (major, minor) == (9, 0) else f"sm_{major}{minor}"


def tile_rows(m: int) -> int:
    """Activation rows per block of the LUT kernel for ``m`` rows: 1 (GEMV), 2, 4 or 8."""
    mt = 1
    while mt < min(m, MAX_MT):
        mt *= 2
    return mt


KINDS = ("lut", "mma", "gemm", "wgmma", "dq")
MMA_MIN_M = 4   # from this many activation rows on, the tensor-core kernel (where it takes the grouping): on an
                # H200 at M = 4 it matched or beat the LUT kernel (16-25 us vs 16-30), whose cost grows with M


def use_codes(bits: int, group_size: int, groups: int, exact: bool = False) -> bool:
    """Whether weights are stored as b-bit codes (``CODE_LAYOUTS``: 1, 2, 4 bits and ternary) instead of bit
    planes: the dp4a GEMV's bit-field extraction costs less than the LUT kernel's lookups and table build (dq.py),
    so codes, read by the dp4a GEMV and the tensor-core kernel, where both take the grouping and int8 tables are
    allowed. 3 bits (no whole codes per word) and float tables keep planes and the LUT kernel."""
    return not exact and dq.supports(bits, group_size, groups) and mma.supports(group_size, groups)


def kernel_kind(m: int, group_size: int, groups: int, exact: bool = False, codes: bool = False,
                gemm_ok: bool = False, wgmma_ok: bool = False) -> str:
    """The kernel rule for ``m`` rows: table lookups for up to 3 rows of bit planes, the dp4a GEMV for up to 3
    rows of codes, the tensor-core kernel for more; from ``gemm.GEMM_MIN_M`` rows on a prefill GEMM where it
    takes the weights and activations: the warpgroup-MMA one on sm_90a (``wgmma_ok``), else the mma.sync one
    (``gemm_ok``); the LUT kernel where the tensor-core kernels do not take the grouping (groups of 8 or 16) or
    where float tables were asked for (``exact``: the dequantized matmul to float32 rounding, where the tensor
    cores round weights to float16)."""
    if m >= MMA_MIN_M and not exact and mma.supports(group_size, groups):
        if m >= gemm.GEMM_MIN_M and (wgmma_ok or gemm_ok):
            return "wgmma" if wgmma_ok else "gemm"
        return "mma"
    return "dq" if codes else "lut"


class CudaLutMatmul:
    """``y = x @ W.T`` for a quantized ``W[N, K]`` on an NVIDIA GPU.

    x: torch CUDA tensor [..., K], float16, bfloat16 or float32; y: [..., N] in ``out_dtype`` (float32 or float16).
    Up to three activation rows run the LUT kernel, whose tables are float32 (built from the activations inside
    the kernel): the dequantized matmul to float32 rounding; 1-, 2- and 4-bit weights (and ternary) with int8
    tables are stored as codes and run the dp4a GEMV instead (activations rounded to int8 per 32 K: ~5e-3 relative,
    the int8 table mode). Four or more rows run the tensor-core kernel
    (weights and activations rounded to float16, float32 sums: ~1e-3 relative) unless
    ``qweight.config.table_dtype`` is "f32" (exact: bit planes and the LUT kernel for every row count) or the
    grouping is finer than 32 (``kind`` forces one; ``kind="lut"`` keeps bit planes).
    """

    def __init__(self, qweight: QuantizedWeight, out_dtype: str = "float32", arch: str | None = None,
                 sms: int | None = None, cps: dict | None = None, maxreg: dict | None = None,
                 kind: str | None = None):
        if not isinstance(qweight, QuantizedWeight):
            raise TypeError(f"build_lut_matmul takes a lutc.QuantizedWeight, got {type(qweight).__name__}")
        if out_dtype not in Y_DTYPES:
            raise ValueError(f"out_dtype must be one of {Y_DTYPES}, got {out_dtype!r}")
        if kind not in (None, *KINDS):
            raise ValueError(f"kind must be one of {KINDS} (or None: chosen by row count), got {kind!r}")
        self.exact = getattr(qweight.config, "table_dtype", "int8") == "f32"
        gs, groups = qweight.group_size, qweight.scales.shape[1]
        codes = kind != "lut" and use_codes(qweight.bits, gs, groups, self.exact)
        if kind == "dq" and not codes:
            raise NotImplementedError(f"the dp4a GEMV takes 1, 2 or 4-bit weights (or ternary) with int8 tables in "
                                      f"groups of a multiple of 32, got bits={qweight.config.bits}, group {gs}, "
                                      f"table_dtype {qweight.config.table_dtype!r}")
        self.cw = pack_cuda(qweight, codes=codes)
        self.n, self.k, self.bits = self.cw.n, self.cw.k, self.cw.bits
        self.layout = self.cw.layout
        self.out_dtype = out_dtype
        self._arch = arch
        self._sms = sms
        self._cps = dict(cps or {})          # {mt: chunks per block}: overrides (benchmark sweeps)
        self._maxreg = dict(maxreg or {})    # {mt: nvcc -maxrregcount}: overrides (benchmark sweeps)
        self._pdl = None                     # the dp4a GEMV's launch mode (dq.choose_pdl): forced (benchmarks, tests)
        self._stream = {}                    # {mt: stream-K blocks, 0: off}: the Hopper GEMM's split, forced
        if kind in ("mma", "gemm") and not mma.supports(self.cw.group_size, self.cw.groups):
            raise NotImplementedError(f"the tensor-core kernels need groups of a multiple of 32 (or one per row), "
                                      f"got {self.cw.group_size}")
        self._kind = kind                    # None: kernel_kind(m, ...); else forced (benchmarks)
        self._mma_tile = None                # rows per block of the tensor-core kernel: forced (benchmarks)
        self._dev = None                     # device tensors, uploaded on first call
        self._fns: dict = {}
        self._work: dict = {}

    @property
    def codes(self) -> bool:
        """Whether the weights are b-bit codes (the dp4a GEMV and the tensor-core kernel) rather than bit planes."""
        return self.layout in CODE_LAYOUTS.values()

    @property
    def table_dtype(self) -> str:
        """What the one-row kernel computes with: "f32" (the LUT kernel's float32 tables, bit planes) or "int8"
        (the dp4a GEMV's int8 activations, codes)."""
        return "int8" if self.codes else "f32"

    # ---- building (works without a GPU) ----
    @property
    def arch(self) -> str:
        if self._arch is None:
            from ...runtime.cuda_libs import gpu_available

            self._arch = arch_of_device() if gpu_available() else "sm_90a"
        return self._arch

    def plan(self, m: int, x_dtype: str = "float16") -> tuple[str, int]:
        """(kernel kind, activation rows per block) for ``m`` rows of ``x_dtype`` activations."""
        gemm_ok = gemm.supports(self.bits, self.layout, self.k, x_dtype)
        wgmma_ok = wgmma.supports(self.bits, self.layout, self.k, x_dtype, self.arch)
        kind = self._kind or kernel_kind(m, self.cw.group_size, self.cw.groups, self.exact, self.codes, gemm_ok,
                                         wgmma_ok)
        if (kind == "lut" and self.codes) or (kind in ("dq", "gemm", "wgmma") and not self.codes):
            raise ValueError(f"the {kind} kernel does not read weights in layout {self.layout}")
        if kind == "wgmma":
            if not wgmma_ok:
                raise ValueError(f"the Hopper GEMM takes float16 activations whose rows are whole 16-byte copies "
                                 f"on {'/'.join(wgmma.ARCHS)}; got {x_dtype}, K = {self.k}, {self.arch}")
            return kind, self._mma_tile or gemm.gemm_tile(m)   # the same tiles (wgmma.TILES)
        if kind == "gemm":
            if not gemm_ok:
                raise ValueError(f"the prefill GEMM takes float16 or float32 activations whose rows are whole "
                                 f"16-byte copies; got {x_dtype}, K = {self.k}")
            return kind, self._mma_tile or gemm.gemm_tile(m)
        if kind == "mma":
            return kind, self._mma_tile or mma.mma_tile(m, self.cw.bits)
        return kind, 1 if kind == "dq" else tile_rows(m)

    def params(self, m: int, x_dtype: str = "float16", residual: bool = False) -> KernelParams:
        if x_dtype not in X_DTYPES:
            raise TypeError(f"the CUDA LUT matmul takes {', '.join(X_DTYPES)} activations, got {x_dtype}")
        cw = self.cw
        kind, mt = self.plan(m, x_dtype)
        if kind == "wgmma":
            cps = self._cps.get(mt) or wgmma.choose_split(cw.chunks, cw.n_pad // ROWS, m, mt, sms=self._sms or 132)
        elif kind == "gemm":
            cps = self._cps.get(mt) or gemm.choose_split(cw.chunks, cw.n_pad // ROWS, m, mt, sms=self._sms or 132)
        elif kind == "mma":
            cps = self._cps.get(mt) or mma.choose_split(cw.chunks, m, mt)
        else:
            cps = self._cps.get(mt) or choose_cps(cw.chunks, cw.n_pad, mt, sms=self._sms or 132)
        # the dp4a GEMV splits K inside its blocks when they fit the GPU at once (a K split swept by a benchmark
        # (``_cps``) is over blocks)
        slices = dq.choose_slices(cw.bits, cw.chunks, cw.n_pad, self._sms or 132) if kind == "dq" and not self._cps else 0
        return KernelParams(n=cw.n, n_pad=cw.n_pad, k=cw.k, chunks=cw.chunks, bits=cw.bits,
                            group_size=cw.group_size, groups=cw.groups, has_zero=cw.zeros is not None,
                            real_zero=cw.real_zero, mt=mt,
                            cps=cw.chunks if slices else min(cps, cw.chunks), x_dtype=x_dtype, y_dtype=self.out_dtype,
                            arch=self.arch, maxreg=self._maxreg.get(mt, 0), residual=residual, kind=kind,
                            layout=self.layout, slices=slices,
                            producers=wgmma.default_producers(mt) if kind == "wgmma" else 0,
                            # stream-K is off until measured on a GPU (wgmma.choose_stream: the rule to try)
                            stream=self._stream.get(mt, 0) if kind == "wgmma" else 0,
                            pdl=(dq.choose_pdl(cw.bits, self.arch) if self._pdl is None else self._pdl)
                            if kind == "dq" else "")

    def build(self, m: int = 1, x_dtype: str = "float16", residual: bool = False):
        """Compile (TVM + nvcc, cached) the library for ``m`` rows; returns its path."""
        from .build import build_library

        return build_library(self.params(m, x_dtype, residual))

    # ---- running ----
    @property
    def weight_bytes(self) -> int:
        return self.cw.nbytes

    def _device_weights(self):
        if self._dev is None:
            import numpy as np
            import torch

            cw = self.cw
            self._dev = [torch.from_numpy(a).cuda() for a in (cw.w.view(np.int32), cw.scale_rows(), cw.zero_rows())]
        return self._dev

    def clone(self) -> "CudaLutMatmul":
        """The same kernels over a private device copy of the weights (benchmarks rotate copies: cold L2)."""
        import copy

        other = copy.copy(self)
        other._dev = [t.clone() for t in self._device_weights()]
        other._work = {}
        return other

    def _fn(self, p: KernelParams):
        f = self._fns.get(p)
        if f is None:
            from ...runtime.cuda_libs import load_library

            f = self._fns[p] = load_library(str(self._library(p)))
        return f

    @staticmethod
    def _library(p: KernelParams):
        """The cached library for ``p``, built now if missing (needs TVM and nvcc)."""
        from .build import build_library, library_path

        lib = library_path(p)
        return lib if lib.exists() else build_library(p)

    def __call__(self, x, out=None, residual=None):
        """``x @ W.T`` (``+ residual``: a float32 tensor [..., N] added in the kernel's epilogue)."""
        import torch

        from ...runtime.cuda import aligned
        from ...runtime.cuda_libs import require_gpu

        require_gpu()
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"the CUDA LUT matmul takes a torch CUDA tensor, got {type(x).__name__}")
        if not x.is_cuda:
            raise ValueError("the CUDA LUT matmul takes a CUDA tensor (x.is_cuda is False); move it with x.cuda()")
        if x.dim() == 0 or x.shape[-1] != self.k:
            raise ValueError(f"activations must be [..., {self.k}], got shape {list(x.shape)}")
        xdt = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}.get(x.dtype)
        if xdt is None:
            raise TypeError(f"the CUDA LUT matmul takes {', '.join(X_DTYPES)} activations, got {x.dtype}")
        lead = tuple(x.shape[:-1])
        m = x.numel() // self.k
        ydt = torch.float32 if self.out_dtype == "float32" else torch.float16
        if m == 0:
            return torch.zeros(lead + (self.n,), dtype=ydt, device=x.device)
        x2 = aligned(x.reshape(m, self.k).contiguous())
        if residual is not None:
            if (not isinstance(residual, torch.Tensor) or residual.dtype != torch.float32
                    or residual.device != x.device or residual.numel() != m * self.n):
                raise ValueError(f"residual must be a float32 tensor of {m * self.n} elements on {x.device}")
            r = residual.reshape(m, self.n).contiguous()
        res = residual is not None
        key = (m, xdt, res, self._kind, self._mma_tile, self._pdl, tuple(sorted(self._cps.items())),
               tuple(sorted(self._maxreg.items())), tuple(sorted(self._stream.items())))
        hit = self._work.get(key)
        if hit is None:   # per row count: the kernel, its partial-sum workspace
            p = self.params(m, xdt, res)
            part = torch.empty((p.split, m, self.cw.n_pad), dtype=torch.float32, device=x.device)
            # split-K completion counters, one per (row tile, row block); the kernel resets them to zero
            cnt = torch.zeros((-(-m // p.mt), self.cw.n_pad // ROWS), dtype=torch.int32, device=x.device)
            dummy = torch.zeros(1, dtype=torch.float32, device=x.device)   # the r argument without a residual
            hit = self._work[key] = (self._fn(p), part, cnt, dummy)
        fn, part, cnt, dummy = hit
        if not res:
            r = dummy
        w, s, z = self._device_weights()
        if w.device != x.device:
            raise ValueError(f"x is on {x.device} but the weights were uploaded to {w.device}")
        if out is None:
            y = torch.empty((m, self.n), dtype=ydt, device=x.device)
        else:
            if out.dtype != ydt or out.numel() != m * self.n or not out.is_contiguous():
                raise ValueError(f"out must be a contiguous {ydt} tensor of {m * self.n} elements")
            y = out.view(m, self.n)
        if _DIRECT_TORCH[0]:
            try:
                fn(x2, w, s, z, part, cnt, y, r)
            except TypeError:   # an FFI without torch.Tensor arguments: go through DLPack
                _DIRECT_TORCH[0] = False
        if not _DIRECT_TORCH[0]:
            import tvm_ffi

            fn(*(tvm_ffi.from_dlpack(t) for t in (x2, w, s, z, part, cnt, y, r)))
        return y.reshape(lead + (self.n,)) if out is None else out


__all__ = ["CudaLutMatmul", "ROWS"]
