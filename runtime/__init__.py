"""The thin runtime: loads a saved artifact and runs it with numpy, tvm_ffi and safetensors only."""


def load(path, replay: bool = True, cuda_graphs: bool | None = None):
    """Load a saved artifact (``CompiledModel.save``); refuses corrupt, truncated or mismatched ones.
    ``replay``: decode steps are replayed (CUDA graphs on a GPU, a bound plan on the CPU); ``cuda_graphs``: its
    older name."""
    from .model import load as _load

    return _load(path, replay, cuda_graphs)


__all__ = ["load"]
