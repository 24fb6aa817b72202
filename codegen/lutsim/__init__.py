"""The simulated LUT target (``lut-sim``): the lmma ISA (isa.py), TVM-scheduled code generation of
lut_matmul tiles (tir.py, codegen.py) and the target that runs a graph with LUT ops on the simulator in
``lutc.sim`` (target.py). Submodules are imported on use: TVM loads only when tiles are scheduled."""
