import numpy as np, lutc
from lutc.codegen.cuda.kernel import CudaLutMatmul
from lutc.codegen.cuda.build import cuda_source
for n, bits in [(4096, 2), (4096, 4)]:
    rng = np.random.default_rng(0)
    q = lutc.quantize_weight(rng.standard_normal((n, 4096)).astype(np.float32), lutc.QuantConfig(bits=bits, group_size=128))
    f = CudaLutMatmul(q, out_dtype="float16", arch="sm_90a", sms=132)
    p = f.params(1)
    print(n, bits, p.kind, p.cps, p.split, p.y_dtype)
    open(f"/tmp/dq16_{n}_{bits}.cu", "w").write(cuda_source(p))
