"""Variants of a generated dq GEMV: v0 as generated, v1 no split-K reduction (partials only), v2 cluster (DSMEM)
reduction of the split-K partials."""
import re, sys
src_path, tag, split, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = open(src_path).read()
i = s.index('extern "C" __global__')
head, body = s[:i], s[i:]
body = body[body.index('\n') + 1:]          # drop the declaration line, keep the definition
out = []
# v0
out.append(body.replace("main_kernel", f"{tag}_v0"))
# store line
lines = body.split("\n")
k = next(j for j, l in enumerate(lines) if l.startswith("  P_ptr[") and "yacc_ptr[0]" in l)
pre = "\n".join(lines[:k]).replace("main_kernel", f"{tag}_v1")
out.append(pre + "\n" + lines[k] + "\n}\n")
pre2 = "\n".join(lines[:k]).replace("main_kernel", f"{tag}_v2")
pre2 = pre2.replace('__global__ void __launch_bounds__(128)', f'__global__ void __cluster_dims__(1, {split}, 1) __launch_bounds__(128)')
cl = f"""
  __shared__ float red_s[128];
  red_s[threadIdx.x] = yacc_ptr[0];
  asm volatile("barrier.cluster.arrive.release.aligned;\\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
  unsigned rank; asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  if (rank == 0) {{
    float s = red_s[threadIdx.x];
    unsigned a = (unsigned)__cvta_generic_to_shared(&red_s[threadIdx.x]);
    #pragma unroll
    for (unsigned r = 1; r < {split}; ++r) {{
      unsigned ra; float v;
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(ra) : "r"(a), "r"(r));
      asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(ra));
      s += v;
    }}
    int nn = blockIdx.x * 128 + threadIdx.x;
    if (nn < {n}) Y_ptr[blockIdx.z * {n} + nn] = s;
  }}
  asm volatile("barrier.cluster.arrive.release.aligned;\\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}}
"""
out.append(pre2 + cl)
# v3: cluster; rank 0's shared row zeroed at the start (barrier arrive early, wait before the adds), the others
# add into it remotely (red.shared::cluster) and arrive; only rank 0 waits, then writes y
pre3 = "\n".join(lines[:k]).replace("main_kernel", f"{tag}_v3")
pre3 = pre3.replace('__global__ void __launch_bounds__(128)', f'__global__ void __cluster_dims__(1, {split}, 1) __launch_bounds__(128)')
# after the weight loads are issued (first use of XQ staging: the line 'int cse_v3' or 'xv_ptr[0] =')
anchor = pre3.index("  xv_ptr[0] =")
start = """  __shared__ float red_s[128];
  unsigned rank; asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  if (rank == 0) red_s[threadIdx.x] = 0.0f;
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
"""
pre3 = pre3[:anchor] + start + pre3[anchor:]
end3 = f"""
  asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
  {{
    unsigned a = (unsigned)__cvta_generic_to_shared(&red_s[threadIdx.x]), ra;
    asm volatile("mapa.shared::cluster.u32 %0, %1, 0;" : "=r"(ra) : "r"(a));
    asm volatile("red.relaxed.cluster.shared::cluster.add.f32 [%0], %1;" :: "r"(ra), "f"(yacc_ptr[0]) : "memory");
  }}
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
  if (rank == 0) {{
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
    int nn = blockIdx.x * 128 + threadIdx.x;
    if (nn < {n}) Y_ptr[blockIdx.z * {n} + nn] = red_s[threadIdx.x];
  }}
}}
"""
out.append(pre3 + end3)
# v4: global partials with release/acquire atomics instead of two full fences
pre4 = "\n".join(lines[:k+1]).replace("main_kernel", f"{tag}_v4")
end4 = f"""
  __shared__ int last4;
  __syncthreads();
  if (threadIdx.x == 0) {{
    int old;
    asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;" : "=r"(old) : "l"(&CNT_ptr[blockIdx.z * gridDim.x + blockIdx.x]) : "memory");
    last4 = old == {split} - 1;
  }}
  __syncthreads();
  if (last4) {{
    int nn = blockIdx.x * 128 + threadIdx.x;
    float s = 0.0f;
    #pragma unroll
    for (int sp = 0; sp < {split}; ++sp) s += __ldcg(&P_ptr[sp * {n} * m + blockIdx.z * {n} + nn]);
    if (nn < {n}) Y_ptr[blockIdx.z * {n} + nn] = s;
    if (threadIdx.x == 0) CNT_ptr[blockIdx.z * gridDim.x + blockIdx.x] = 0;
  }}
}}
"""
out.append(pre4 + end4)
open(f"{tag}.cuh", "w").write("\n".join(out))
open(f"head.cuh", "w").write(head)
