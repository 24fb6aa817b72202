"""A loaded artifact: run it, generate with it. Imports numpy, tvm_ffi and safetensors, never the compiler."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .artifact import TVM_RUNTIME, WEIGHTS, ArtifactError, read_manifest
from .generate import Generation, generate
from .isa import host_arch, supported
from .lut import KERNEL_NEEDS, missing_kernels
from .profile import Profile
from .program import Program


class LoadedModel:
    def __init__(self, path, replay: bool = True):
        self.path, self.replay = Path(path), replay
        self.manifest = m = read_manifest(self.path)
        self.target = m.get("target")
        if self.target not in TARGETS:
            raise ArtifactError(f"{self.path}: built for target {self.target!r}; this runtime runs {sorted(TARGETS)}")
        self.program = Program.from_json(m["program"])
        self.interpreter = TARGETS[self.target](self)
        self._tokenizer = None

    def _weights(self) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file

        return load_file(str(self.path / WEIGHTS))

    def _cpu(self):
        arch = self.manifest.get("arch")  # older artifacts record the ISA only (they were all x86_64)
        if arch is not None and arch != host_arch():
            raise ArtifactError(f"{self.path}: built for {arch} ({self.manifest['isa']} kernels); this machine is "
                                f"{host_arch()}: recompile on it")
        if not supported(self.manifest["isa"]):
            raise ArtifactError(f"{self.path}: built for the {self.manifest['isa']} instruction set, which this CPU "
                                "lacks: recompile with target_options={'isa': 'avx2'} or 'generic'")
        per_lut = [missing_kernels(spec["params"]) for spec in self.program.luts.values()]
        missing = sorted(set().union(*per_lut))
        if missing:
            n = sum(map(bool, per_lut))
            raise ArtifactError(f"{self.path}: {n} LUT kernels run {' and '.join(KERNEL_NEEDS[k] for k in missing)} "
                                "(many-row calls), which this CPU or OS does not offer: recompile on this machine")
        from .cpu import interpreter

        libraries = {p.name: str(p) for p in (self.path / "kernels").iterdir()}
        return interpreter(self.program, self._weights(), libraries, str(self.path / TVM_RUNTIME), self.replay)

    def _cuda(self):
        """Device memory through torch, kernels through the bundled TVM runtime (lib/): needs an NVIDIA GPU."""
        from .cuda_libs import NoGPUError, gpu_available

        arch = self.manifest["arch"]
        if not gpu_available():
            raise NoGPUError(f"{self.path}: this artifact runs on an NVIDIA GPU ({arch}) and no CUDA GPU is present "
                             "(torch.cuda.is_available() is False); compile for target='cpu' to run here")
        from .cuda import check_arch, interpreter

        check_arch(arch)
        libraries = {p.name: str(p) for p in (self.path / "kernels").iterdir()}
        return interpreter(self.program, self._weights(), libraries, lib_dir=self.path / "lib", graphs=self.replay)

    @property
    def input_names(self) -> list[str]:
        return [s["name"] for s in self.program.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self.program.outputs]

    def run(self, *args, **kwargs) -> list[np.ndarray]:
        if args and kwargs:
            raise TypeError("pass inputs either by position or by name, not both")
        return self.interpreter(kwargs if kwargs else list(args))

    def __call__(self, *args, **kwargs):
        outs = self.run(*args, **kwargs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    @contextmanager
    def profile(self, replayed: bool = False):
        """Time every step of the calls made inside the ``with`` block, by phase (prefill / decode) and kernel:
        ``with model.profile() as prof: model.generate(...)``, then ``print(prof.table())`` or ``prof.report()``
        (runtime/profile.py). The calls run step by step; with ``replayed``, decode steps replay as they do
        unprofiled and the replay's bound calls are timed (on a GPU a CUDA graph has no steps to time)."""
        interp = self.interpreter
        prof = Profile(interp.synchronize, replayed=replayed and interp.replay is not None)
        interp.profile = prof
        try:
            yield prof
        finally:
            interp.profile = None
            if interp.replay is not None and not prof.replayed:   # eager steps may have moved what it bound
                interp.replay.forget()

    @property
    def tokenizer(self):
        """The artifact's tokenizer (``tokenizers.Tokenizer``), or None when it has none."""
        if self._tokenizer is None and self.manifest.get("tokenizer"):
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(self.path / self.manifest["tokenizer"]))
        return self._tokenizer

    def generate(self, prompt, max_new_tokens: int = 32, eos_token_id: int | None = None, on_token=None) -> Generation:
        """Greedy decoding from token ids (or a string when the artifact has a tokenizer)."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("this artifact has no tokenizer: pass token ids")
            prompt = self.tokenizer.encode(prompt).ids
        return generate(self.run_dict, self.program.inputs, self.output_names, prompt, max_new_tokens,
                        self.program.meta.get("max_positions"), eos_token_id, on_token)

    def run_dict(self, inputs: dict) -> list[np.ndarray]:
        return self.interpreter(inputs)


TARGETS = {"cpu": LoadedModel._cpu, "cuda": LoadedModel._cuda}


def load(path, replay: bool = True, cuda_graphs: bool | None = None) -> LoadedModel:
    """Load a saved artifact (``CompiledModel.save``) for running; refuses corrupt or mismatched ones.
    ``replay``: decode steps are replayed, from CUDA graphs on a GPU (runtime/cuda_graphs.py) and from a bound
    plan on the CPU (runtime/replay.py); off, every kernel is called step by step (e.g. to profile them).
    ``cuda_graphs``: the older name of ``replay``."""
    return LoadedModel(path, replay if cuda_graphs is None else cuda_graphs)
