"""lutc: a compiler that lowers low-bit LLM graphs to lookup-table kernels.

``import lutc`` is cheap: the compiler (networkx, sympy, torch, onnx, tvm) loads on first use, so that
``lutc.runtime`` works with numpy, tvm_ffi and safetensors alone.
"""
__version__ = "0.1.0"

_LAZY = {
    "compile": ("lutc.codegen.driver", "compile"),
    "CompiledModel": ("lutc.codegen.driver", "CompiledModel"),
    "known_targets": ("lutc.codegen", "known_targets"),
    "QuantConfig": ("lutc.passes.quantize.config", "QuantConfig"),
    "quantize_weight": ("lutc.passes.quantize.weight", "quantize_weight"),
    "QuantizedWeight": ("lutc.passes.quantize.weight", "QuantizedWeight"),
}

__all__ = ["compile", "CompiledModel", "known_targets", "QuantConfig", "quantize_weight", "QuantizedWeight",
           "__version__"]


def __getattr__(name):
    if name == "kernels":
        import importlib

        return importlib.import_module("lutc.codegen.kernels")
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'lutc' has no attribute {name!r}")
