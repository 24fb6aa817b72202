// Programmatic dependent launch for the dp4a GEMV: each kernel of dq_rows plain, _w (launched with programmatic
// stream serialization, griddepcontrol.wait before it reads the activations) and _t (_w plus launch_dependents at
// entry); same weights, checked against the plain one, timed in 200-launch CUDA graphs over > 400 MB of weight
// copies (cold L2), medians of 9.
#include "k.cuh"
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e), __LINE__); exit(1);} } while (0)
typedef void (*Ship)(int*, float*, half*, int*, half*, float*, signed char*, int, int);
typedef void (*Rows)(half*, int*, half*, float*, signed char*, int);

static int *dW, *cnt; static half *dS, *dx; static float *dy, *P; static signed char* dZ;
static size_t wn, sn; static int copies;

static void setup(int N, int B) {
  const int K = 4096, C = 32, G = 32;
  wn = (size_t)C * B * N * 4; sn = (size_t)G * N;
  copies = std::max(3, (int)(400e6 / (wn * 4 + sn * 3)));
  if (!dW) {
    CK(cudaMalloc(&dW, 900u << 20)); CK(cudaMalloc(&dS, 150u << 20)); CK(cudaMalloc(&dZ, 80u << 20));
    CK(cudaMalloc(&dx, K * 2)); CK(cudaMalloc(&dy, 16384 * 4)); CK(cudaMalloc(&P, 16 * 16384 * 4));
    CK(cudaMalloc(&cnt, 1024 * 4)); CK(cudaMemset(cnt, 0, 1024 * 4));
  }
  srand(1);
  std::vector<int> hw(wn); for (size_t i = 0; i < wn; i++) hw[i] = rand() * 2654435761u;
  std::vector<half> hs(sn); for (size_t i = 0; i < sn; i++) hs[i] = __float2half(0.001f * (1 + rand() % 7));
  std::vector<signed char> hz(sn); for (size_t i = 0; i < sn; i++) hz[i] = (signed char)(rand() % 4 - 2);
  std::vector<half> hx(K); for (int i = 0; i < K; i++) hx[i] = __float2half((rand() % 2001 - 1000) / 500.0f);
  for (int c = 0; c < copies; c++) {
    CK(cudaMemcpy(dW + c * wn, hw.data(), wn * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dS + c * sn, hs.data(), sn * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dZ + c * sn, hz.data(), sn, cudaMemcpyHostToDevice));
  }
  CK(cudaMemcpy(dx, hx.data(), K * 2, cudaMemcpyHostToDevice));
}

// launch(copy, stream)
static float timeit(const char* name, int N, int B, std::function<void(int, cudaStream_t)> launch,
                    std::vector<float>* ref) {
  CK(cudaMemset(dy, 0, N * 4));
  launch(0, 0);
  CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
  std::vector<float> y(N); CK(cudaMemcpy(y.data(), dy, N * 4, cudaMemcpyDeviceToHost));
  char chk[64] = "";
  if (ref->empty()) *ref = y;
  else {
    float err = 0, mx = 0;
    for (int i = 0; i < N; i++) { err = fmaxf(err, fabsf(y[i] - (*ref)[i])); mx = fmaxf(mx, fabsf((*ref)[i])); }
    snprintf(chk, sizeof chk, "  max|dy|/max|y| = %.1e", mx > 0 ? err / mx : err);
  }
  cudaStream_t st; CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  const int iters = 200;
  cudaGraph_t g; cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  for (int i = 0; i < iters; i++) launch(i % copies, st);
  CK(cudaStreamEndCapture(st, &g)); CK(cudaGraphInstantiate(&ge, g, 0));
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  CK(cudaGraphLaunch(ge, st)); CK(cudaStreamSynchronize(st));
  std::vector<float> ts;
  for (int rep = 0; rep < 9; rep++) {
    CK(cudaEventRecord(a, st)); CK(cudaGraphLaunch(ge, st)); CK(cudaEventRecord(b, st)); CK(cudaEventSynchronize(b));
    float ms; CK(cudaEventElapsedTime(&ms, a, b)); ts.push_back(ms * 1000 / iters); }
  std::sort(ts.begin(), ts.end());
  double gbs = (wn * 4 + sn * 3) / (ts[4] * 1e-6) / 1e9;
  printf("%-18s N=%5d W%d: %6.2f us (min %.2f) %6.0f GB/s%s\n", name, N, B, ts[4], ts[0], gbs, chk);
  CK(cudaGraphExecDestroy(ge)); CK(cudaGraphDestroy(g)); CK(cudaStreamDestroy(st));
  return ts[4];
}


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
