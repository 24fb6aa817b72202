"""Backends, one small module per target over a shared interface: ``Target.build(graph) -> Executable``."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np

from ..ir.graph import Graph


class Executable(Protocol):
    def __call__(self, inputs) -> list[np.ndarray]: ...


class Target(Protocol):
    name: str

    def build(self, g: Graph) -> Executable: ...


class UnknownTargetError(ValueError):
    pass


_TARGETS: dict[str, Callable[[], Target]] = {}
_PLANNED: dict[str, str] = {}


def register_target(name: str, factory: Callable[[], Target]) -> None:
    _TARGETS[name] = factory


def known_targets() -> list[str]:
    return sorted(set(_TARGETS) | set(_PLANNED))


def get_target(name, **options) -> Target:
    """A target by name (options go to its constructor), or a target object passed through."""
    if not isinstance(name, str):
        if hasattr(name, "build"):
            return name
        raise TypeError(f"target must be a name or a target object, got {type(name).__name__}")
    if name in _TARGETS:
        return _TARGETS[name](**options)
    if name in _PLANNED:
        raise NotImplementedError(f"target {name!r} ({_PLANNED[name]}) is not implemented yet; "
                                  f"available now: {sorted(_TARGETS)}")
    raise UnknownTargetError(f"unknown target {name!r}; known targets: {known_targets()}")


class ReferenceTarget:
    """The numpy executor: the ground truth, slow, every op."""
    name = "reference"

    def __init__(self, float_dtype=None):
        self.float_dtype = float_dtype

    def build(self, g: Graph) -> Executable:
        from .reference.executor import Executor

        return Executor(g, self.float_dtype)


def _cpu(**options):
    from .cpu.target import CpuTarget

    return CpuTarget(**options)


def _cuda(**options):
    from .cuda.target import CudaTarget

    return CudaTarget(**options)


register_target("reference", ReferenceTarget)
register_target("cpu", _cpu)
register_target("cuda", _cuda)


def _lut_sim() -> Target:
    from .lutsim.target import LutSimTarget  # imports TVM lazily, only when the target is built

    return LutSimTarget()


register_target("lut-sim", _lut_sim)
