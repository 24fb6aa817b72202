"""Running a CUDA program (codegen/cuda/lower.py) on an NVIDIA GPU: the CPU's interpreter over device memory.

Device memory is torch CUDA tensors, handed to the TVM-built kernels through DLPack: LUT matmuls call the
nvcc-built LUT libraries, every other op one function of the model's TVM ops library (codegen/cuda/ops.py).
Views, slices, splits and KV-cache writes are views and copies of the device tensors, no kernel of their own.
Outputs stay on the device (torch tensors); the KV cache is kept in place as on the CPU.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from .kernels import KERNELS
from .kernels import DTYPES
from .program import InputError, Interpreter, KvCaches, Program, bind_inputs, numpy_input

ROWS = 128   # weight rows per block of the LUT kernels (codegen/cuda/layout.py)


def _torch():
    import torch

    return torch


class DeviceKvCaches(KvCaches):
    """KV caches in device memory, appended in place (see KvCaches); the whole capacity at once (no growth):
    a replayed decode graph writes to the addresses it was captured with."""

    grow = False

    @staticmethod
    def _concat(arrays, axis: int):
        return _torch().cat(arrays, axis)

    @staticmethod
    def _empty(shape, like):
        return _torch().empty(shape, dtype=like.dtype, device=like.device)

    @staticmethod
    def _address(a) -> int:
        return a.data_ptr()

    @staticmethod
    def _strides(a) -> tuple:
        return tuple(a.stride())


def device_input(device) -> Callable:
    """Input conversion for a device program: numpy arrays and torch tensors, moved to ``device``."""
    torch = _torch()
    to_torch = {np.dtype(np.float32): torch.float32, np.dtype(np.int64): torch.int64,
                np.dtype(np.int32): torch.int32, np.dtype(np.float16): torch.float16}

    def convert(x, dtype: str, name: str):
        if not isinstance(x, torch.Tensor):
            return torch.from_numpy(np.ascontiguousarray(numpy_input(x, dtype, name))).to(device)
        target = to_torch.get(np.dtype(DTYPES[dtype]))
        if target is None:
            raise InputError(f"input {name}: {dtype} inputs are not supported on the GPU")
        if x.dtype != target and x.is_floating_point() != target.is_floating_point:
            raise InputError(f"input {name}: expected {dtype}, got {x.dtype}")
        return x.to(device=device, dtype=target)
    return convert


def tile_for(m: int, tiles) -> int:
    """The row tile whose library runs ``m`` rows: 1 for one row, else the smallest larger tile that holds
    them all (or the largest)."""
    if m == 1:
        return 1
    bigger = [t for t in tiles if t > 1 and t >= m]
    return min(bigger) if bigger else max(tiles)


class CudaLut:
    """One LUT matmul of the program: ``y = x @ W.T`` over the packed device weights, one library per
    activation-row tile (``mt``: 1 for decode, more for prefill). A spec with ``residual`` has the residual
    add fused (``y = x @ W.T + r``); the others get a one-element dummy as the kernel's ``r``."""

    KERNEL_ARGS = 8   # x, w, s, z, partials, counters, y, r (the residual argument came in lutc 2026-11-28)

    def __init__(self, spec: dict, weights: Mapping, load: Callable[[str], Callable]):
        if spec.get("kernel_args") != self.KERNEL_ARGS:
            from .artifact import ArtifactError

            raise ArtifactError(f"LUT call {spec.get('node')}: its kernels take {spec.get('kernel_args', 7)} "
                                f"arguments, this runtime passes {self.KERNEL_ARGS}: recompile the model")
        p = spec["params"]
        self.n, self.k, self.n_pad = p["n"], p["k"], p["n_pad"]
        self.tiles = {int(mt): (load(lib), split) for mt, (lib, split) in spec["libraries"].items()}
        self.w, self.s, self.z = (weights[key] for key in spec["weights"])
        self.residual = bool(spec.get("residual"))
        self._work: dict[int, tuple] = {}

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in (self.w, self.s, self.z))

    def _workspace(self, m: int, device):
        """Per row count: the kernel, its split-K partial sums and completion counters (zeroed once: the
        kernel resets them)."""
        if m not in self._work:
            torch = _torch()
            mt = tile_for(m, self.tiles)
            fn, split = self.tiles[mt]
            part = torch.empty((split, m, self.n_pad), dtype=torch.float32, device=device)
            cnt = torch.zeros((-(-m // mt), self.n_pad // ROWS), dtype=torch.int32, device=device)
            dummy = torch.zeros(1, dtype=torch.float32, device=device)
            self._work[m] = (fn, part, cnt, dummy)
        return self._work[m]

    def __call__(self, x, r=None):
        torch = _torch()
        if x.shape[-1] != self.k:
            raise ValueError(f"activations must be [..., {self.k}], got shape {list(x.shape)}")
        if (r is not None) != self.residual:
            raise ValueError("this LUT call " + ("adds a residual: pass it" if self.residual else "takes no residual"))
        lead = tuple(x.shape[:-1])
        m = x.numel() // self.k
        if r is not None and tuple(r.shape) != lead + (self.n,):
            raise ValueError(f"the residual must be {list(lead + (self.n,))}, got {list(r.shape)}")
        y = torch.empty((m, self.n), dtype=torch.float32, device=x.device)
        if m:
            fn, part, cnt, dummy = self._workspace(m, x.device)
            rr = dummy if r is None else compact(r.to(torch.float32), m, self.n)
            fn(aligned(compact(x.to(torch.float32), m, self.k)), self.w, self.s, self.z, part, cnt, y, rr)
        return y.reshape(lead + (self.n,))


# ---- the ops library's functions as interpreter kernels: (fn, params) -> kernel(attrs, ins, dim) ----

def canonical_strides(shape) -> tuple:
    out, acc = [], 1
    for n in reversed(tuple(shape)):
        out.append(acc)
        acc *= n
    return tuple(reversed(out))


def compact(t, *shape):
    """``t`` (reshaped to ``shape``) with row-major strides, size-1 dimensions included: TVM checks every
    stride of a compact buffer, where torch's ``contiguous()`` may keep odd strides on size-1 dimensions."""
    if shape:
        t = t.reshape(shape)
    if (t.is_contiguous() and 1 not in t.shape) or t.stride() == canonical_strides(t.shape):
        return t
    return _torch().empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)


def aligned(t):
    """``t``, copied if its data does not start on 16 bytes (the prefill GEMMs copy activation rows in 16-byte
    pieces; torch's allocations are aligned, views at an offset may not be)."""
    return t if t.data_ptr() % 16 == 0 else t.clone()


def _flat(t):
    return compact(t, -1)


def _unary(fn, params, scalars):
    def run(attrs, ins, dim):
        x = ins[0]
        y = _torch().empty(x.shape, dtype=x.dtype, device=x.device)
        fn(_flat(x), y.view(-1))
        return y
    return run


def _binary(fn, params, scalars):
    cols = params.get("cols")

    def run(attrs, ins, dim):
        a, b = ins
        y = _torch().empty(a.shape, dtype=a.dtype, device=a.device)
        if cols:
            fn(compact(a, -1, cols), compact(b, cols), y.view(-1, cols))
        else:
            fn(_flat(a), _flat(b), y.view(-1))
        return y
    return run


def _rms_norm(fn, params, scalars):
    h = params["features"]

    def run(attrs, ins, dim):
        x, w = ins
        y = _torch().empty(x.shape, dtype=x.dtype, device=x.device)
        fn(compact(x, -1, h), compact(w, h), y.view(-1, h))
        return y
    return run


def _rope(fn, params, scalars):
    d = params["head_dim"]

    def run(attrs, ins, dim):
        x, cos, sin = ins
        s = x.shape[-2]
        if cos.shape[-2] != s or sin.shape[-2] != s:   # a window sliced past the end of the tables
            raise ValueError(f"the RoPE tables cover {cos.shape[-2]} of this step's {s} positions: the sequence "
                             "runs past the model's context")
        y = _torch().empty(x.shape, dtype=x.dtype, device=x.device)
        fn(compact(x, -1, s, d), compact(cos, s, d), compact(sin, s, d), y.view(-1, s, d))
        return y
    return run


def _cache_buffer(t):
    """The cache buffer [b, heads, capacity, d] whose first positions ``t`` is (the runtime's KV caches are
    views of such buffers), or ``t`` itself when it is compact."""
    b, h, L, d = t.shape
    st = t.stride()
    if st[3] != 1 or st[2] != d or st[1] % d or st[1] < L * d or st[0] != h * st[1]:
        return compact(t)
    return t.as_strided((b, h, st[1] // d, d), canonical_strides((b, h, st[1] // d, d)))


def _attention(fn, params, scalars):
    """Over the ``L`` positions of the keys; the filled ones are all of them, or ``scalars.n_valid`` (a device
    value) in a decode graph, where the keys span a bucket of the cache (runtime/cuda_graphs.py)."""
    def run(attrs, ins, dim):
        q, k, v = ins
        L = k.shape[2]
        if v.shape[2] != L:
            raise ValueError(f"keys hold {L} positions but values {v.shape[2]}")
        kb, vb = _cache_buffer(k), _cache_buffer(v)
        if kb.shape[2] != vb.shape[2]:   # the kernel takes one capacity for both
            kb, vb = compact(k), compact(v)
        y = _torch().empty(q.shape, dtype=q.dtype, device=q.device)
        fn(compact(q), kb, vb, L, scalars.n_valid if scalars.graphing else scalars.const(L), y)
        return y
    return run


def _embedding(fn, params, scalars):
    h = params["features"]

    def run(attrs, ins, dim):
        table, ids = ins
        vocab = table.shape[0]
        if ids.numel() and not scalars.graphing and (int(ids.max()) >= vocab or int(ids.min()) < 0):
            raise IndexError(f"gather: token ids must be in [0, {vocab}), got {int(ids.min())}..{int(ids.max())}")
        y = _torch().empty(tuple(ids.shape) + (h,), dtype=table.dtype, device=table.device)
        fn(compact(table), _flat(ids), y.view(-1, h))
        return y
    return run


def _linear(fn, params, scalars):
    n, k = params["out_features"], params["in_features"]

    def run(attrs, ins, dim):
        x, w = ins
        y = _torch().empty(tuple(x.shape[:-1]) + (n,), dtype=x.dtype, device=x.device)
        fn(compact(x, -1, k), compact(w), y.view(-1, n))
        return y
    return run


CALLS = {"unary": _unary, "binary": _binary, "swiglu": _binary, "rms_norm": _rms_norm, "rope": _rope,
         "attention": _attention, "embedding": _embedding, "linear": _linear}


def _views(attrs, ins, dim):
    """reshape / transpose / squeeze / unsqueeze chains as torch views (a reshape copies when it must)."""
    x = ins[0]
    for spec in attrs["ops"]:
        op, a = spec["op"], spec["attrs"]
        if op == "reshape":
            shape = [dim(d) if isinstance(d, str) else int(d) for d in spec["shape"]]
            if not a.get("allowzero"):
                shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
            x = x.reshape(shape)
        elif op == "transpose":
            x = x.permute(a.get("perm") or list(reversed(range(x.dim()))))
        elif op == "squeeze":
            axes = a.get("axes")
            x = x.squeeze() if axes is None else x.squeeze(tuple(ax % x.dim() for ax in axes))
        else:
            for ax in sorted(ax % (x.dim() + len(a["axes"])) for ax in a["axes"]):
                x = x.unsqueeze(ax)
    return x


MOVES = {"views": _views, "slice": KERNELS["slice"], "split": KERNELS["split"]}


class DeviceScalars:
    """Small integer tensors the kernels read on the device: constants (cached), and while a decode graph is
    captured (``graphing``) the cache position every replay sets and the filled length derived from it."""

    def __init__(self, device):
        torch = _torch()
        self.device, self._consts = device, {}
        self.position = torch.zeros(1, dtype=torch.int64, device=device)   # cached positions before the step
        self.n_valid = torch.zeros(1, dtype=torch.int64, device=device)    # ... and after it
        # set by DecodeGraphs.trace while a graph's step runs: the bucket of cache positions attention spans,
        # the symbol sizes of the traced step, the last position every RoPE table gather covers
        self.graphing = False
        self.span, self.env, self.limit = 0, {}, math.inf

    def const(self, v: int):
        if v not in self._consts:
            if len(self._consts) > 256:
                self._consts.clear()
            self._consts[v] = _torch().full((1,), v, dtype=_torch().int64, device=self.device)
        return self._consts[v]


class CudaInterpreter(Interpreter):
    """Runs a CUDA :class:`Program`: weights are device tensors, ``ops`` the loaded TVM ops library."""

    kv_caches = DeviceKvCaches

    def __init__(self, program: Program, weights: Mapping, luts: Mapping[str, Callable], ops, device,
                 graphs: bool = False):
        """``graphs``: replay decode steps from CUDA graphs (runtime/cuda_graphs.py)."""
        from .cuda_graphs import DecodeGraphs

        self.ops, self.device = ops, device
        self.convert_input = device_input(device)
        self.scalars = DeviceScalars(device)
        super().__init__(program, weights, luts)
        self.replay = DecodeGraphs(self) if graphs else None

    @staticmethod
    def synchronize() -> None:
        _torch().cuda.synchronize()

    @property
    def graphs(self):
        """The decode graphs (runtime/cuda_graphs.py), or None when they are off."""
        return self.replay

    def constant(self, value: np.ndarray):
        return _torch().from_numpy(np.ascontiguousarray(value)).to(self.device)

    def _kernel(self, step):
        tvm_op = step.attrs.get("tvm")
        if tvm_op is not None:
            return CALLS[tvm_op["kind"]](self.ops[tvm_op["fn"]], tvm_op["params"], self.scalars)
        if step.kernel in MOVES:
            return MOVES[step.kernel]
        if step.kernel == "lut":   # x, and the residual when the add is fused
            lut = self.luts[step.attrs["lut"]]
            return lambda attrs, ins, dim: lut(*ins)
        if step.kernel == "kv_append":
            return super()._kernel(step)
        raise ValueError(f"step {step.name}: {step.kernel!r} has no GPU kernel (artifact from a newer lutc?)")


def check_arch(arch: str, device: str = "cuda") -> None:
    """The kernels of an ``arch`` build run on this GPU: sm_90a only on compute capability 9.0; sm_XY (PTX
    inside) on X.Y and newer."""
    from .cuda_libs import NoGPUError

    major, minor = _torch().cuda.get_device_capability(device)
    want = int(arch[3]), int(arch[4])
    if (arch.endswith("a") and (major, minor) != want) or (major, minor) < want:
        raise NoGPUError(f"the kernels were compiled for {arch}, this GPU is sm_{major}{minor}: recompile with "
                         f"target_options={{'arch': 'sm_{major}{minor}'}}")


def upload(weights: Mapping[str, np.ndarray], device) -> dict:
    torch = _torch()
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in weights.items()}


def interpreter(program: Program, weights: Mapping[str, np.ndarray], libraries: Mapping[str, str],
                lib_dir=None, device: str = "cuda", graphs: bool = True) -> CudaInterpreter:
    """The interpreter of a CUDA program over its (host) weights and libraries (file name -> path);
    ``graphs``: replay decode steps from CUDA graphs."""
    from .cuda_libs import load_module, require_gpu

    require_gpu()
    dev = upload(weights, device)
    loaded: dict[str, object] = {}

    def module(name: str):
        if name not in loaded:
            loaded[name] = load_module(libraries[name], lib_dir)
        return loaded[name]

    luts = {lid: CudaLut(spec, dev, lambda lib: module(lib)["main"]) for lid, spec in program.luts.items()}
    return CudaInterpreter(program, dev, luts, module(program.meta["ops_library"]), device, graphs)
