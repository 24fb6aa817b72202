"""``lutc.compile``: import -> canonicalize -> (quantize, lower: later stages) -> build for a target."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from . import get_target, known_targets
from ..ir.graph import Graph
from ..ir.printer import print_graph, summary
from ..passes.instruments import DumpIR, PassTiming
from ..passes.manager import PassManager
from ..passes.pipeline import canonicalize, quantize


class CompiledModel:
    """A graph built for one target; call it on numpy arrays or torch tensors."""

    def __init__(self, graph: Graph, executable, target: str, timing: PassTiming | None = None):
        self.graph, self.executable, self.target, self.timing = graph, executable, target, timing

    @property
    def ir(self) -> str:
        return print_graph(self.graph)

    def summary(self) -> str:
        return summary(self.graph)

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    def run(self, *args, **kwargs) -> list[np.ndarray]:
        if args and kwargs:
            raise TypeError("pass inputs either by position or by name, not both")
        return self.executable(kwargs if kwargs else list(args))

    def __call__(self, *args, **kwargs):
        outs = self.run(*args, **kwargs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def save(self, path, tokenizer=None, generation: dict | None = None):
        """Write a standalone artifact directory (``lutc.runtime.load`` runs it without the compiler).
        ``tokenizer``: a tokenizer.json path, a ``tokenizers.Tokenizer`` or a transformers fast tokenizer;
        ``generation``: defaults ``lutc run`` uses (``eos_token_id``, ``chat_prefix``, ``chat_suffix``)."""
        if not hasattr(self.executable, "save"):
            raise NotImplementedError(f"target {self.target!r} does not write artifacts; compile with target='cpu'")
        return self.executable.save(path, tokenizer=_tokenizer_json(tokenizer), generation=generation)

    def generate(self, prompt_ids, max_new_tokens: int = 32, eos_token_id: int | None = None, on_token=None):
        """Greedy decoding from token ids; a model with ``past_*`` inputs decodes one token per call."""
        from ..runtime.generate import generate

        specs = self.graph.input_specs()
        return generate(self.executable, specs, list(self.graph.output_names), prompt_ids, max_new_tokens,
                        self.graph.meta.get("max_positions"), eos_token_id, on_token)


def _tokenizer_json(tok) -> bytes | None:
    if tok is None or isinstance(tok, bytes):
        return tok
    if isinstance(tok, (str, Path)):
        return Path(tok).read_bytes()
    backend = getattr(tok, "backend_tokenizer", tok)  # transformers fast tokenizer -> tokenizers.Tokenizer
    if hasattr(backend, "to_str"):
        return backend.to_str().encode()
    raise TypeError(f"cannot save a {type(tok).__name__} as tokenizer.json")


def compile(model, target="reference", quant=None, dump_ir=None, example_inputs: Sequence | None = None,
            dynamic_dims: dict | None = None, dump_only_on_change: bool = False,
            progress: bool = False, target_options: dict | None = None) -> CompiledModel:
    """Compile ``model`` (ONNX file/ModelProto, torch ``nn.Module``/``ExportedProgram``/``fx.GraphModule``,
    or a lutc ``Graph``) for ``target``.

    ``example_inputs`` are needed for an ``nn.Module`` (torch.export) ; ``dynamic_dims`` names symbolic
    dims, e.g. ``{"input_ids": {1: "seq"}}``. ``quant=lutc.QuantConfig(...)`` rewrites the chosen linear
    layers into LUT ops. ``dump_ir="dir"`` writes one numbered text file per pass. ``target`` is a name
    (``lutc.known_targets()``) or a target object; ``target_options`` go to the named target's constructor
    (cpu: ``threads``, ``isa``, ``fuse_norm``).
    """
    from ..frontend import import_model

    backend = get_target(target, **(target_options or {}))
    graph = import_model(model, example_inputs=example_inputs, dynamic_dims=dynamic_dims)
    timing = PassTiming()
    instruments = [timing]
    if dump_ir is not None:
        instruments.append(DumpIR(dump_ir, only_on_change=dump_only_on_change))
    lower = backend.passes() if hasattr(backend, "passes") else []
    graph = PassManager(canonicalize() + quantize(quant, progress) + lower, instruments).run(graph)
    return CompiledModel(graph, backend.build(graph), backend.name, timing)


__all__ = ["compile", "CompiledModel", "known_targets"]
