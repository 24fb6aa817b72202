"""The thin runtime: loads a saved artifact and runs it with numpy, tvm_ffi and safetensors only."""


def load(path, cuda_graphs: bool = True):
    """Load a saved artifact (``CompiledModel.save``); refuses corrupt, truncated or mismatched ones.
    ``cuda_graphs``: a cuda artifact replays its decode steps from CUDA graphs."""
    from .model import load as _load

    return _load(path, cuda_graphs)


__all__ = ["load"]
