"""The thin runtime: loads a saved artifact and runs it with numpy, tvm_ffi and safetensors only."""


def load(path):
    """Load a saved artifact (``CompiledModel.save``); refuses corrupt, truncated or mismatched ones."""
    from .model import load as _load

    return _load(path)


__all__ = ["load"]
