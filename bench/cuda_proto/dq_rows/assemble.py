"""Concatenate the generated sources into k.cuh: the first file's head (helpers, TVM's defines), then every
kernel renamed after its file (rows_4096_2_t4, ship_4096_2, ...)."""
import glob
import os
import sys

src, out = sys.argv[1], sys.argv[2]
files = sorted(glob.glob(os.path.join(src, "*.cu")))
parts = []
for i, f in enumerate(files):
    s = open(f).read()
    j = s.index('extern "C" __global__')
    head, body = s[:j], s[j:]
    body = body[body.index("\n") + 1:]   # drop the declaration, keep the definition
    if i == 0:
        parts.append(head)
    parts.append(body.replace("main_kernel", os.path.basename(f)[:-3]))
open(out, "w").write("\n".join(parts))
print(len(files), "kernels")
