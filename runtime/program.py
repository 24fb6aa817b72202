"""A compiled model as data, and the interpreter that runs it: a list of kernel calls over named values.

The compiler (codegen/cpu/lower.py) writes a :class:`Program`; ``manifest.json`` stores it; this module runs
it with numpy, tvm_ffi and the artifact's libraries only. Step kinds:

- ``lut``: a LUT matmul library call (tables built inside, optionally after a fused RMSNorm);
- ``kv_append``: append this step's keys/values to a KV cache kept in place (see :class:`KvCaches`);
- any other name: the numpy kernel of that IR op (``lutc.runtime.kernels``).
"""
from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

import numpy as np

from . import dims
from .fused import FUSED, rope_kv_attention
from .kernels import DTYPES, KERNELS


class InputError(ValueError):
    """Inputs that do not match the model's declared inputs (names, dtypes, shapes)."""


@dataclass
class Step:
    kernel: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    name: str = ""


@dataclass
class Program:
    inputs: list[dict]                 # {"name", "dtype", "shape": [int | str]}
    outputs: list[dict]                # {"name", "value"}
    constants: dict[str, dict]         # value id -> {"weight": key} | {"value": list, "dtype": str}
    steps: list[Step]
    luts: dict[str, dict] = field(default_factory=dict)   # lut id -> {"library", "params", "weights", "norm"}
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["free"] = self.free_lists()
        return d

    @staticmethod
    def from_json(d: dict) -> "Program":
        return Program(d["inputs"], d["outputs"], d["constants"], [Step(**s) for s in d["steps"]],
                       d.get("luts", {}), d.get("meta", {}))

    def free_lists(self) -> list[list[str]]:
        """The buffer plan: after step i, the values no later step reads (their memory is reused)."""
        last: dict[str, int] = {}
        for i, s in enumerate(self.steps):
            for v in s.inputs:
                last[v] = i
        keep = {o["value"] for o in self.outputs} | set(self.constants)
        free: list[list[str]] = [[] for _ in self.steps]
        for v, i in last.items():
            if v not in keep:
                free[i].append(v)
        return free


def numpy_input(x, dtype: str, name: str) -> np.ndarray:
    """An input as a numpy array of the IR dtype ``dtype`` (a float for a float, an integer for an integer)."""
    want = np.dtype(DTYPES[dtype])
    x = _to_numpy(x)
    if x.dtype != want:
        if x.dtype.kind == want.kind or (x.dtype.kind in "iu" and want.kind in "iu"):
            return x.astype(want)
        raise InputError(f"input {name}: expected {dtype}, got {x.dtype}")
    return x


def bind_inputs(specs: list[dict], inputs, convert: Callable = numpy_input) -> tuple[list, dict[str, int]]:
    """Check inputs against ``specs`` (name, dtype, shape) and bind the symbolic dims to sizes; each input
    goes through ``convert(x, IR dtype name, name)`` (to numpy by default; device runtimes move it)."""
    names = [s["name"] for s in specs]
    if isinstance(inputs, Mapping):
        unknown, missing = set(inputs) - set(names), [n for n in names if n not in inputs]
        if unknown or missing:
            raise InputError(f"inputs {sorted(unknown)} are unknown and {missing} missing; the model takes {names}")
        inputs = [inputs[n] for n in names]
    inputs = list(inputs)
    if len(inputs) != len(specs):
        raise InputError(f"the model takes {len(specs)} inputs {names}, got {len(inputs)}")
    env: dict[str, int] = {}
    arrays = []
    for spec, x in zip(specs, inputs):
        name, shape = spec["name"], spec["shape"]
        x = convert(x, spec["dtype"], name)
        if x.ndim != len(shape):
            raise InputError(f"input {name}: expected rank {len(shape)} {shape}, got shape {list(x.shape)}")
        for axis, (d, n) in enumerate(zip(shape, x.shape)):
            if isinstance(d, int):
                if d != n:
                    raise InputError(f"input {name}: dim {axis} must be {d} ({shape}), got {n}")
            elif d.isidentifier():
                if env.setdefault(d, n) != n:
                    raise InputError(f"input {name}: dim {axis} ({d}) is {n} but {d} = {env[d]} elsewhere")
        arrays.append(x)
    for spec, x in zip(specs, arrays):  # expressions such as "past+seq" once every symbol is bound
        for axis, (d, n) in enumerate(zip(spec["shape"], x.shape)):
            if isinstance(d, str) and not d.isidentifier():
                try:
                    want_n = dims.evaluate(d, env)
                except ValueError:
                    continue
                if want_n != n:
                    raise InputError(f"input {spec['name']}: dim {axis} must be {d} = {want_n}, got {n}")
    return arrays, env


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # torch tensor
        return x.detach().cpu().numpy()
    return np.asarray(x)


class KvCaches:
    """KV caches kept in place. ``present = concat(past, new)`` would copy the whole cache every step; instead
    the first append allocates a buffer for ``capacity`` positions and returns a view of its filled part.
    When the next step's ``past`` is exactly that view (the filled part of a known buffer), the new positions
    are written after it, in place. Any other ``past`` (a user's array, or an older view after a branch) is
    copied into a fresh buffer, so no view a caller holds is ever overwritten.

    ``grow``: buffers start at twice the positions they first hold (at least ``MIN_POSITIONS``) and double,
    copied, when full, up to ``capacity`` — a model's whole context (SmolLM2: 8192 positions, 6 MiB per cache)
    allocated at once costs page faults and resident memory on every prompt. Device caches take the whole
    capacity at once: replayed CUDA graphs hold their addresses."""

    grow = True
    MIN_POSITIONS = 256

    def __init__(self, capacity: int | None):
        self.capacity = capacity
        self.appended = 0   # positions the last append added
        # buffer address -> (weak reference to the buffer, positions filled); views keep buffers alive
        self._filled: dict[int, tuple[weakref.ref, int]] = {}

    # array operations, overridden for device arrays (runtime/cuda.py)
    @staticmethod
    def _concat(arrays, axis: int):
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def _empty(shape, like: np.ndarray) -> np.ndarray:
        return np.empty(shape, like.dtype)

    @staticmethod
    def _address(a: np.ndarray) -> int:
        return _address(a)

    @staticmethod
    def _strides(a: np.ndarray) -> tuple:
        return a.strides

    def append(self, past: np.ndarray, new: np.ndarray, axis: int = 2) -> np.ndarray:
        if axis != 2 or past.ndim != 4:
            return self._concat([past, new], axis)
        buf, p = self.reserve(past, new.shape[2])
        buf[:, :, p:p + new.shape[2]] = new
        return buf[:, :, :p + new.shape[2]]

    def reserve(self, past: np.ndarray, s: int) -> tuple[np.ndarray, int]:
        """The buffer holding ``past`` [b, h, p, d] at its start with room for ``s`` more positions, which the
        caller writes at ``p:p + s`` (the buffer's view ``[:, :, :p + s]`` is the present); and ``p``."""
        p = past.shape[2]
        if self.capacity is not None and p + s > self.capacity:
            raise ValueError(f"the KV cache holds {self.capacity} positions; this step needs {p + s} "
                             f"({p} cached + {s} new): shorten the prompt or the generation")
        address = self._address(past) if p else None
        buf = self._owner_at(address, past) if p else None
        if buf is None or p + s > buf.shape[2]:
            buf = self._allocate(past if buf is None else buf[:, :, :p], p + s)
            address = self._address(buf)
        self._filled[address] = (weakref.ref(buf), p + s)   # mark_filled, the address known
        self.appended = s
        return buf, p

    def _allocate(self, past, need: int):
        """A fresh buffer for ``need`` positions (more when growing), holding ``past`` at its start."""
        cap = need
        if self.grow:   # without a capacity too: headroom, so a decode step does not copy the whole cache
            cap = max(self.MIN_POSITIONS, 2 * need)
        if self.capacity is not None:
            cap = self.capacity if not self.grow else min(cap, self.capacity)
        buf = self._empty(tuple(past.shape[:2]) + (cap,) + tuple(past.shape[3:]), past)
        buf[:, :, :past.shape[2]] = past
        self._filled = {a: e for a, e in self._filled.items() if e[0]() is not None}
        return buf

    def mark_filled(self, buf, n: int, address: int | None = None) -> None:
        """``buf``'s first ``n`` positions are filled; its view of them is the next step's past. ``address``:
        ``buf``'s, when the caller knows it (numpy's costs microseconds to read)."""
        self._filled[self._address(buf) if address is None else address] = (weakref.ref(buf), n)

    def owner(self, past: np.ndarray) -> np.ndarray | None:
        """The buffer whose filled part ``past`` is, if any."""
        return self._owner_at(self._address(past), past)

    def _owner_at(self, address: int, past):
        hit = self._filled.get(address)
        if hit is None:
            return None
        buf = hit[0]()
        if (buf is None or hit[1] != past.shape[2] or buf.shape[:2] != past.shape[:2]
                or self._strides(past) != self._strides(buf)):
            return None
        return buf


class Interpreter:
    """Runs a :class:`Program` over its weights; ``luts`` maps lut ids to callables (LutKernel).

    Values live in numbered slots (a list, not a dict); each step is pre-resolved to its kernel, input
    slots, output slots and the slots freed after it (the program's buffer plan)."""

    kv_caches = KvCaches                  # a device runtime keeps its caches in device memory
    convert_input = staticmethod(numpy_input)
    replay = None   # replays decode steps (runtime/decode.py DecodeReplay) when a runtime sets one

    def __init__(self, program: Program, weights: Mapping[str, np.ndarray], luts: Mapping[str, Callable],
                 compiled: Mapping[str, Callable] | None = None):
        """``compiled``: kernels of the ops library by step kind (they replace the numpy versions)."""
        self.program, self.luts, self.compiled = program, dict(luts), dict(compiled or {})
        self.kv = self.kv_caches(program.meta.get("max_positions"))
        slot: dict[str, int] = {}
        for s in program.inputs:
            slot[s["name"]] = len(slot)
        self.init: list = [None] * len(slot)
        self.symbolic: list[tuple[int, np.ndarray]] = []  # shape constants such as ["batch", "seq", 9, 64]
        for vid, c in program.constants.items():
            slot[vid] = len(slot)
            if "weight" in c:
                self.init.append(weights[c["weight"]])
            elif c.get("symbolic"):
                self.init.append(None)
                self.symbolic.append((slot[vid], np.asarray(c["value"], dtype=object)))
            else:
                self.init.append(self.constant(np.asarray(c["value"], dtype=DTYPES[c["dtype"]])))
        for step in program.steps:
            for v in step.outputs:
                slot.setdefault(v, len(slot))
        self.init += [None] * (len(slot) - len(self.init))
        self.plan = [(self._kernel(st), st, [slot[v] for v in st.inputs], [slot[v] for v in st.outputs],
                      [slot[v] for v in free]) for st, free in zip(program.steps, program.free_lists())]
        self.outputs = [slot[o["value"]] for o in program.outputs]

    def constant(self, value: np.ndarray):
        return value

    def _kernel(self, step: Step) -> Callable:
        if step.kernel == "lut":   # x, and the residual when the add is fused
            lut = self.luts[step.attrs["lut"]]
            if len(step.inputs) == 2:
                return lambda attrs, ins, dim: lut(ins[0], residual=ins[1])
            return lambda attrs, ins, dim: lut(ins[0])
        if step.kernel == "kv_append":
            return lambda attrs, ins, dim: self.kv.append(ins[0], ins[1], attrs.get("axis", 2))
        if step.kernel == "rope_kv_attention":
            block = self.compiled.get(step.kernel) or rope_kv_attention
            return lambda attrs, ins, dim: block(attrs, ins, self.kv)
        fn = self.compiled.get(step.kernel) or FUSED.get(step.kernel) or KERNELS.get(step.kernel)
        if fn is None:
            raise ValueError(f"step {step.name}: unknown kernel {step.kernel!r} (artifact from a newer lutc?)")
        return fn

    profile = None  # a runtime/profile.py Profile while one is attached: steps (or a replay's bound calls) timed

    @staticmethod
    def synchronize() -> None:
        """Wait for the kernels queued so far (CPU kernels return when they are done)."""

    def __call__(self, inputs) -> list[np.ndarray]:
        if self.profile is not None:
            return self.profile.call(lambda: self._call(inputs))
        return self._call(inputs)

    def _call(self, inputs) -> list[np.ndarray]:
        prof = self.profile
        replay = self.replay if prof is None or prof.replayed else None
        if replay is not None:
            outs = replay.run_again(inputs)
            if outs is not None:
                return outs
        arrays, env = bind_inputs(self.program.inputs, inputs, self.convert_input)
        if replay is not None:
            outs = replay.run(arrays, env)
            if outs is not None:
                return outs
            replay.forget()
        return self.execute(self.plan if prof is None else prof.plan(self, env), arrays, env)

    def execute(self, plan: list, arrays: list, env: dict[str, int]) -> list:
        """Run ``plan`` (``self.plan`` or a variant of it) over bound inputs and their symbol sizes."""
        regs = list(self.init)
        regs[:len(arrays)] = arrays

        def dim(d):
            return dims.evaluate(d, env) if isinstance(d, str) else int(d)

        for i, c in self.symbolic:
            regs[i] = np.asarray([dim(x) for x in c.reshape(-1).tolist()], np.int64).reshape(c.shape)
        for fn, step, ins, outs, free in plan:
            try:
                out = fn(step.attrs, [regs[j] for j in ins], dim)
            except (ValueError, TypeError, IndexError) as e:
                raise type(e)(f"{step.kernel} {step.name}: {e}") from e
            if len(outs) == 1:
                regs[outs[0]] = out if not isinstance(out, list) else out[0]
            else:
                for j, o in zip(outs, out):
                    regs[j] = o
            for j in free:
                regs[j] = None
        return [regs[j] for j in self.outputs]


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]
