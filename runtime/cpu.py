"""The CPU runtime of a program: its LUT kernels, the ops library, the interpreter and its decode replay."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .lut import LutKernel
from .ops_lib import CompiledOps
from .program import Interpreter, Program
from .replay import CpuReplay


def interpreter(program: Program, weights: Mapping[str, np.ndarray], libraries: Mapping[str, str],
                tvm_runtime: str | None = None, replay: bool = True) -> Interpreter:
    """``libraries``: file name -> path of the program's kernel libraries. ``replay``: decode steps run from a
    bound plan (runtime/replay.py) rather than step by step."""
    luts = {lid: LutKernel.from_spec(spec, weights, libraries[spec["library"]], tvm_runtime)
            for lid, spec in program.luts.items()}
    name = program.meta.get("ops_library")
    ops = CompiledOps(libraries[name], tvm_runtime) if name else None
    compiled = ops.kernels(program.meta.get("compiled_ops", True)) if ops else {}
    interp = Interpreter(program, weights, luts, compiled)
    if replay:
        interp.replay = CpuReplay(interp, ops.binders() if ops else {})
    return interp
