"""One kernel of run.py's variants, called a few times (for ncu): profile_one.py N BITS KIND TILE [STAGES]."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import run  # noqa: E402

n, bits, kind, tile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
stages = int(sys.argv[5]) if len(sys.argv) > 5 else 0
q = run._quant(n, 4096, 128, False, bits, 1234)
f = run.kernel(q, kind, tile or None, None, 128, stages=stages)
print(f.params(128), f._library(f.params(128)), flush=True)
x = torch.randn(128, 4096, dtype=torch.float16, device="cuda")
for _ in range(3):
    f(x)
torch.cuda.synchronize()
