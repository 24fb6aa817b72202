import numpy as np, lutc
from lutc.codegen.cuda.build import cuda_source
for n, k, bits, cps in [(14336, 4096, 2, 4), (4096, 4096, 4, 4), (4096, 4096, 4, 2), (11008, 4096, 2, 4), (4096,4096,2,4), (4096,4096,2,2)]:
    rng = np.random.default_rng(0)
    q = lutc.quantize_weight(rng.standard_normal((n, k)).astype(np.float32), lutc.QuantConfig(bits=bits, group_size=128))
    f = lutc.kernels.build_lut_matmul(q, target="cuda")
    f._cps = {1: cps}
    p = f.params(1)
    print(n, k, bits, p.kind, p.cps, p.split)
    open(f"/tmp/dq_{n}_{bits}_c{cps}.cu", "w").write(cuda_source(p))
