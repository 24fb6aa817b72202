"""CUDA LUT kernels generated through TVM (issue #7): layout (``cuda-g4-c128-v1``), TVMScript kernels,
nvcc-built fatbins in exported libraries, and a torch-facing callable."""
