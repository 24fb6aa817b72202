"""lutc: a compiler that lowers low-bit LLM graphs to lookup-table kernels.

Heavy modules (torch, onnx, tvm) are imported lazily so that ``lutc.runtime`` stays thin.
"""
__version__ = "0.1.0"

from .api import CompiledModel, compile, known_targets  # noqa: E402

__all__ = ["compile", "CompiledModel", "known_targets", "__version__"]
