"""Tensor types: a dtype and a shape whose dims are ints or symbolic expressions ("seq", "seq+1")."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Union

import numpy as np

Dim = Union[int, str]


class DType(Enum):
    f16 = "f16"
    bf16 = "bf16"
    f32 = "f32"
    f64 = "f64"
    i8 = "i8"
    u8 = "u8"
    i16 = "i16"
    i32 = "i32"
    i64 = "i64"
    bool = "bool"

    @property
    def is_float(self) -> bool:
        return self in (DType.f16, DType.bf16, DType.f32, DType.f64)

    def to_numpy(self) -> np.dtype:
        if self is DType.bf16:  # numpy has no bfloat16: the reference computes it in f32
            return np.dtype(np.float32)
        return np.dtype(_TO_NUMPY[self])

    @staticmethod
    def from_numpy(dt) -> "DType":
        dt = np.dtype(dt)
        for k, v in _TO_NUMPY.items():
            if np.dtype(v) == dt:
                return k
        raise TypeError(f"no lutc dtype for numpy dtype {dt}")


_TO_NUMPY = {
    DType.f16: "float16", DType.f32: "float32", DType.f64: "float64", DType.i8: "int8",
    DType.u8: "uint8", DType.i16: "int16", DType.i32: "int32", DType.i64: "int64", DType.bool: "bool",
}


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple[Dim, ...]

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(_norm_dim(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(str(d) for d in self.shape)}]"

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(dtype, self.shape)


def _norm_dim(d) -> Dim:
    if isinstance(d, (bool, np.bool_)):
        raise TypeError(f"bad dim {d!r}")
    if isinstance(d, (int, np.integer)):
        return int(d)
    if isinstance(d, str):
        return d.replace(" ", "")
    from .dims import to_dim  # sympy expressions

    return to_dim(d)


def parse_type(text: str) -> TensorType:
    text = text.strip()
    dt, _, rest = text.partition("[")
    if not rest.endswith("]"):
        raise ValueError(f"bad tensor type {text!r}")
    from .parser import split_top

    dims = [int(p) if _is_int(p) else p for p in split_top(rest[:-1])]
    return TensorType(DType(dt), tuple(dims))


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False
