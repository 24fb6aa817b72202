// Programmatic dependent launch for the dp4a GEMV: each kernel of dq_rows plain, _w (launched with programmatic
// stream serialization, griddepcontrol.wait before it reads the activations) and _t (_w plus launch_dependents at
// entry); same weights, checked against the plain one, timed in 200-launch CUDA graphs over > 400 MB of weight
// copies (cold L2), medians of 9.
#include "k.cuh"
#include "../dq_rows/common.cuh"
#include <array>


template <typename F, typename... A>
static void go(F f, bool pdl, dim3 grid, int threads, cudaStream_t st, A... a) {
  if (!pdl) { f<<<grid, threads, 0, st>>>(a...); return; }
  cudaLaunchConfig_t cfg = {}; cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization; at[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.gridDim = grid; cfg.blockDim = dim3(threads); cfg.stream = st; cfg.attrs = at; cfg.numAttrs = 1;
  CK(cudaLaunchKernelEx(&cfg, f, a...));
}

static void shape(const char* tag, std::array<Ship, 3> ship, int split, int N, int B, std::array<Rows, 3> rows, int cpt) {
  setup(N, B);
  std::vector<float> ref;
  const char* names[3] = {"", " pdl wait", " pdl trigger"};
  for (int v = 0; v < 3; v++) {
    char nm[64]; snprintf(nm, sizeof nm, "ship%s", names[v]);
    timeit(nm, N, B, [&](int j, cudaStream_t st) {
      go(ship[v], v > 0, dim3(N / 128, split, 1), 128, st, cnt, P, dS + j * sn, dW + j * wn, dx, dy, dZ + j * sn, N, 1);
    }, &ref);
  }
  for (int v = 0; v < 3; v++) {
    char nm[64]; snprintf(nm, sizeof nm, "rows t%d%s", cpt, names[v]);
    timeit(nm, N, B, [&](int j, cudaStream_t st) {
      go(rows[v], v > 0, dim3(N / 32, 1, 1), 32 * (32 / cpt), st, dS + j * sn, dW + j * wn, dx, dy, dZ + j * sn, 1);
    }, &ref);
  }
}

#define S3(n, b) std::array<Ship, 3>{ship_##n##_##b, ship_##n##_##b##_w, ship_##n##_##b##_t}
#define R3(n, b, t) std::array<Rows, 3>{rows_##n##_##b##_t##t##_r1, rows_##n##_##b##_t##t##_r1_w, rows_##n##_##b##_t##t##_r1_t}
int main() {
  for (int rep = 0; rep < 2; rep++) {
    shape("4096 W2", S3(4096, 2), 16, 4096, 2, R3(4096, 2, 2), 2);
    shape("4096 W4", S3(4096, 4), 16, 4096, 4, R3(4096, 4, 1), 1);
    shape("11008 W2", S3(11008, 2), 8, 11008, 2, R3(11008, 2, 4), 4);
    shape("11008 W4", S3(11008, 4), 8, 11008, 4, R3(11008, 4, 2), 2);
    shape("14336 W2", S3(14336, 2), 8, 14336, 2, R3(14336, 2, 4), 4);
    shape("14336 W4", S3(14336, 4), 8, 14336, 4, R3(14336, 4, 2), 2);
  }
}
