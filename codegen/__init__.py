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
_PLANNED = {
    "cpu": "LUT kernels through TVM/LLVM for x86 (issues #4, #5)",
    "cuda": "LUT kernels through TVM for NVIDIA GPUs (issue #7)",
    "lut-sim": "the simulated lmma LUT instruction (issue #6)",
}


def register_target(name: str, factory: Callable[[], Target]) -> None:
    _TARGETS[name] = factory


def known_targets() -> list[str]:
    return sorted(set(_TARGETS) | set(_PLANNED))


def get_target(name: str) -> Target:
    if name in _TARGETS:
        return _TARGETS[name]()
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


register_target("reference", ReferenceTarget)
