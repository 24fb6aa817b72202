"""Frontends: ONNX, torch (torch.export / torch.fx) -> lutc IR. Op names are mapped to ``Op`` here only."""
from __future__ import annotations

from pathlib import Path

from ..ir.graph import Graph
from .errors import FrontendError, UnsupportedOpError


def import_model(model, example_inputs=None, dynamic_dims=None) -> Graph:
    """Dispatch on the kind of ``model``."""
    if isinstance(model, Graph):
        return model.copy()
    if isinstance(model, (str, Path)):
        suffix = Path(model).suffix.lower()
        if suffix == ".onnx":
            from .onnx import import_onnx

            return import_onnx(model)
        if suffix == ".gguf":
            from .gguf import import_gguf

            return import_gguf(model)
        raise FrontendError(f"cannot tell the format of {str(model)!r}: expected a .onnx or .gguf file")
    kind = type(model).__module__ + "." + type(model).__name__
    if kind.startswith("onnx"):
        from .onnx import import_onnx

        return import_onnx(model)
    if "torch" in kind or hasattr(model, "named_parameters"):
        from .torch import import_torch

        return import_torch(model, example_inputs=example_inputs, dynamic_dims=dynamic_dims)
    raise FrontendError(f"cannot import a {kind}: expected an ONNX model or file, a torch nn.Module, "
                        "ExportedProgram or fx.GraphModule, or a lutc Graph")


__all__ = ["import_model", "FrontendError", "UnsupportedOpError"]
