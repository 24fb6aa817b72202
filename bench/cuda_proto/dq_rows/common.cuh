// What the dq_rows and pdl harnesses share: the weights (copies over > 400 MB: cold L2) and the timing of one
// launch form in a 200-launch CUDA graph, medians of 9, checked against the first form timed. Include after k.cuh.
#pragma once
#include <algorithm>
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
