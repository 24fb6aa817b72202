"""The ``cpu`` target: LUT matmuls through the TVM-built kernels of this package, every other op through the
runtime's numpy kernels, run by the runtime's interpreter (the same code path a saved artifact takes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...ir.graph import Graph
from ...passes.dce import DeadCodeElimination
from ...passes.lut_share import ShareTables
from ...passes.manager import Pass
from ...runtime.cpu import interpreter
from ...runtime.lut import default_threads
from ...runtime.program import Program
from .isa import arch_of
from .kernel import check_isa
from .lower import CpuOptions, lower
from .ops import OPS_LIBRARY_STEPS, build_ops_library


class CpuExecutable:
    """A lowered program with its arrays and libraries; ``__call__(inputs) -> list of arrays``."""

    def __init__(self, program: Program, weights: dict[str, np.ndarray], libraries: dict[str, str],
                 replay: bool = True):
        self.program, self.weights, self.libraries = program, weights, libraries
        self.interpreter = interpreter(program, weights, libraries, replay=replay)

    def __call__(self, inputs) -> list[np.ndarray]:
        return self.interpreter(inputs)

    def save(self, path, tokenizer: bytes | None = None, generation: dict | None = None) -> Path:
        from ...runtime.artifact import TVM_RUNTIME, write_artifact
        from ...runtime.tvm_libs import ensure_tvm_runtime

        files: dict[str, str | bytes] = {f"kernels/{name}": src for name, src in self.libraries.items()}
        files[TVM_RUNTIME] = ensure_tvm_runtime()
        if tokenizer is not None:
            files["tokenizer.json"] = tokenizer
        manifest = {"target": "cpu", "isa": self.program.meta["isa"], "arch": arch_of(self.program.meta["isa"]),
                    "threads": self.program.meta["threads"],
                    "program": self.program.to_json(), "tokenizer": "tokenizer.json" if tokenizer else None,
                    "weight_bytes": int(sum(w.nbytes for w in self.weights.values())), "generation": generation or {}}
        return write_artifact(path, manifest, self.weights, files)


class CpuTarget:
    name = "cpu"

    def __init__(self, options: CpuOptions | None = None, **kwargs):
        self.options = options or CpuOptions(**kwargs)
        self.isa = check_isa(self.options.isa)
        self.threads = self.options.threads or default_threads()

    def passes(self) -> list[Pass]:
        """Graph passes this target wants after quantization: one matmul per shared table."""
        return [ShareTables(), DeadCodeElimination()] if self.options.share_tables else []

    def build(self, g: Graph) -> CpuExecutable:
        program, weights, libraries = lower(g, self.options, self.threads, self.isa)
        program.meta.update(target="cpu", isa=self.isa, threads=self.threads)
        if self.options.compiled_ops or any(s.kernel in OPS_LIBRARY_STEPS for s in program.steps):
            lib = build_ops_library(self.isa, self.threads)
            libraries[lib.name] = str(lib)
            program.meta.update(ops_library=lib.name, compiled_ops=self.options.compiled_ops)
        return CpuExecutable(program, weights, libraries, self.options.replay)
