import sys, os, re, statistics
import torch, tvm_ffi
from lutc.bench.gpu import bench_weights, _bench_kernel, _stream_us
q = next(q for (n, k, name), q in bench_weights() if (n, k, name) == (4096, 4096, "W2"))
f = _bench_kernel("W2", q)
x = torch.randn(1, 4096, dtype=torch.float16, device="cuda")
f(x); torch.cuda.synchronize()
import ctypes, glob
g = torch.cuda.CUDAGraph(keep_graph=True)
with tvm_ffi.use_torch_stream(torch.cuda.graph(g)):
    for _ in range(3):
        f(x)
out = os.environ.get("OUT", "/tmp")
os.makedirs(out, exist_ok=True)
libs = glob.glob(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "*", "lib", "libcudart.so*")) + \
    glob.glob("/usr/local/cuda*/lib64/libcudart.so*") + ["libcudart.so"]
print(libs[:3])
rt = None
for l in libs:
    try:
        rt = ctypes.CDLL(l); break
    except OSError:
        pass
graph = ctypes.c_void_p(g.raw_cuda_graph())
print("dot print rc", rt.cudaGraphDebugDotPrint(graph, f"{out}/graph.dot".encode(), ctypes.c_uint(0xFFFF)))
txt = open(f"{out}/graph.dot").read()
print(len(txt), "bytes of dot")
for line in txt.splitlines():
    if "label" in line:
        print(re.sub(r"\\\\n", " | ", line)[:600])
# timing: the same kernel, graph of 96 calls, one copy vs clones
fs = [f] + [f.clone() for _ in range(60)]
print("stream 61 copies:", _stream_us([lambda f=f: f(x) for f in fs]))
print("stream 1 copy (L2-warm):", _stream_us([lambda: f(x)]))
