"""The ``cuda`` target: every kernel compiled here (TVM + nvcc, fatbins inside the libraries), run on an NVIDIA
GPU by the runtime's interpreter over device memory (runtime/cuda.py). Compiling and saving need no GPU;
running does, and says so."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...ir.graph import Graph
from ...passes.dce import DeadCodeElimination
from ...passes.lut_share import ShareTables
from ...passes.manager import Pass
from ...runtime.program import Program
from .build import build_ops_library
from .lower import CudaOptions, lower

CUDA_RUNTIME = "lib/libtvm_runtime_cuda.so"


class CudaExecutable:
    """A lowered CUDA program with its arrays and libraries; ``__call__(inputs)`` -> device tensors."""

    def __init__(self, program: Program, weights: dict[str, np.ndarray], libraries: dict[str, str],
                 graphs: bool = True):
        self.program, self.weights, self.libraries, self.graphs = program, weights, libraries, graphs
        self._interpreter = None

    @property
    def interpreter(self):
        """Built on first use: uploads the weights and loads the libraries (needs the GPU)."""
        if self._interpreter is None:
            from ...runtime.cuda import interpreter

            self._interpreter = interpreter(self.program, self.weights, self.libraries, graphs=self.graphs)
        return self._interpreter

    def __call__(self, inputs) -> list:
        return self.interpreter(inputs)

    def save(self, path, tokenizer: bytes | None = None, generation: dict | None = None) -> Path:
        from ...runtime.artifact import TVM_RUNTIME, write_artifact
        from ...runtime.cuda_libs import find_library

        files: dict[str, str | bytes] = {f"kernels/{name}": src for name, src in self.libraries.items()}
        files[TVM_RUNTIME] = find_library("libtvm_runtime.so")
        files[CUDA_RUNTIME] = find_library("libtvm_runtime_cuda.so")
        if tokenizer is not None:
            files["tokenizer.json"] = tokenizer
        manifest = {"target": "cuda", "arch": self.program.meta["arch"], "program": self.program.to_json(),
                    "tokenizer": "tokenizer.json" if tokenizer else None,
                    "weight_bytes": int(sum(w.nbytes for w in self.weights.values())), "generation": generation or {}}
        return write_artifact(path, manifest, self.weights, files)


class CudaTarget:
    name = "cuda"

    def __init__(self, options: CudaOptions | None = None, **kwargs):
        self.options = options or CudaOptions(**kwargs)

    def passes(self) -> list[Pass]:
        """One matmul per shared table, as on the CPU: one launch reads the activation for Q/K/V."""
        return [ShareTables(), DeadCodeElimination()]

    def build(self, g: Graph) -> CudaExecutable:
        program, weights, libraries, ops = lower(g, self.options)
        lib = build_ops_library(ops, self.options.arch, pdl=self.options.pdl)
        libraries[lib.name] = str(lib)
        program.meta.update(target="cuda", arch=self.options.arch, ops_library=lib.name)
        return CudaExecutable(program, weights, libraries, self.options.graphs)
