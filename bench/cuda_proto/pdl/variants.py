"""From dq_rows' generated sources (gen.py's directory), k.cuh with each kernel three ways: as generated, ``_w``
(``griddepcontrol.wait`` before the first activation read: the weight loads run ahead of the previous kernel's
end) and ``_t`` (also ``griddepcontrol.launch_dependents`` at entry: the next kernel may start at once)."""
import glob
import os
import sys

WAIT = '  asm volatile("griddepcontrol.wait;" ::: "memory");\n'
TRIGGER = '  asm volatile("griddepcontrol.launch_dependents;");\n'

src, out = sys.argv[1], sys.argv[2]
parts = []
for i, f in enumerate(sorted(glob.glob(os.path.join(src, "*.cu")))):
    s = open(f).read()
    j = s.index('extern "C" __global__')
    head, body = s[:j], s[j:]
    body = body[body.index("\n") + 1:]
    if i == 0:
        parts.append(head)
    name = os.path.basename(f)[:-3]
    parts.append(body.replace("main_kernel", name))
    lines = body.splitlines(keepends=True)
    first_x = next(k for k, ln in enumerate(lines) if "= ((float)X_ptr[" in ln or "X_ptr[" in ln and "=" in ln.split("X_ptr[")[0])
    waited = "".join(lines[:first_x] + [WAIT] + lines[first_x:])
    parts.append(waited.replace("main_kernel", name + "_w"))
    triggered = waited.replace(") {\n", ") {\n" + TRIGGER, 1)
    parts.append(triggered.replace("main_kernel", name + "_t"))
open(out, "w").write("\n".join(parts))
print(len(parts) - 1, "kernels")
