#include "k.cuh"
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e), __LINE__); exit(1);} } while (0)
template <typename YT>
using KF = void (*)(int*, float*, half*, int*, half*, YT*, signed char*, int, int);

// copies: weight copies; separate: one cudaMalloc per tensor per copy (as torch clones) instead of one region;
// private_ws: each copy its own partials and counters (as each CudaLutMatmul clone)
template <typename YT>
void run(const char* name, KF<YT> f, int B, int copies, bool separate, bool private_ws, int calls, const char* real = nullptr) {
  const int N = 4096, K = 4096, C = 32, G = 32, NB = 32, SPLIT = 16;
  size_t wn = (size_t)C * B * N * 4, sn = (size_t)G * N;
  std::vector<int*> W(copies); std::vector<half*> S(copies); std::vector<signed char*> Z(copies);
  std::vector<float*> P(copies); std::vector<int*> CNT(copies);
  int* big = nullptr; half* bigs = nullptr; signed char* bigz = nullptr;
  if (!separate) { CK(cudaMalloc(&big, wn * 4 * copies)); CK(cudaMalloc(&bigs, sn * 2 * copies)); CK(cudaMalloc(&bigz, sn * copies)); }
  std::vector<int> hw(wn); for (auto& v : hw) v = rand() * 2654435761u;
  std::vector<half> hs(sn); for (auto& v : hs) v = __float2half(0.001f * (1 + rand() % 7));
  std::vector<signed char> hz(sn, 1);
  if (real) {   // the benchmark's weight bytes (cw.w, cw.scales, cw.zeros written by numpy tofile)
    char p[256];
    snprintf(p, sizeof p, "%s_w.bin", real); FILE* fw = fopen(p, "rb"); fread(hw.data(), 4, wn, fw); fclose(fw);
    snprintf(p, sizeof p, "%s_s.bin", real); FILE* fs = fopen(p, "rb"); fread(hs.data(), 2, sn, fs); fclose(fs);
    snprintf(p, sizeof p, "%s_z.bin", real); FILE* fz = fopen(p, "rb"); fread(hz.data(), 1, sn, fz); fclose(fz);
  }
  for (int c = 0; c < copies; c++) {
    if (separate) { CK(cudaMalloc(&W[c], wn * 4)); CK(cudaMalloc(&S[c], sn * 2)); CK(cudaMalloc(&Z[c], sn)); }
    else { W[c] = big + c * wn; S[c] = bigs + c * sn; Z[c] = bigz + c * sn; }
    CK(cudaMemcpy(W[c], hw.data(), wn * 4, cudaMemcpyHostToDevice)); CK(cudaMemcpy(S[c], hs.data(), sn * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(Z[c], hz.data(), sn, cudaMemcpyHostToDevice));
    if (private_ws || c == 0) { CK(cudaMalloc(&P[c], SPLIT * N * 4)); CK(cudaMalloc(&CNT[c], NB * 4)); CK(cudaMemset(CNT[c], 0, NB * 4)); }
    else { P[c] = P[0]; CNT[c] = CNT[0]; }
  }
  half* x; YT* y; CK(cudaMalloc(&x, K * 2)); CK(cudaMemset(x, 0x22, K * 2)); CK(cudaMalloc(&y, N * sizeof(YT)));
  cudaStream_t st; CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaGraph_t g; cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  for (int i = 0; i < calls; i++) { int j = i % copies;
    f<<<dim3(NB, SPLIT, 1), 128, 0, st>>>(CNT[j], P[j], S[j], W[j], x, y, Z[j], N, 1); }
  CK(cudaStreamEndCapture(st, &g)); CK(cudaGraphInstantiate(&ge, g, 0));
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  CK(cudaGraphLaunch(ge, st)); CK(cudaStreamSynchronize(st));
  std::vector<float> ts;
  for (int rep = 0; rep < 9; rep++) {
    CK(cudaEventRecord(a, st)); CK(cudaGraphLaunch(ge, st)); CK(cudaEventRecord(b, st)); CK(cudaEventSynchronize(b));
    float ms; CK(cudaEventElapsedTime(&ms, a, b)); ts.push_back(ms * 1000 / calls); }
  std::sort(ts.begin(), ts.end());
  printf("%s W%d copies=%d separate=%d private_ws=%d calls=%d bytes=%s: %.2f us\n", name, B, copies, separate, private_ws, calls, real ? "benchmark's" : "random", ts[4]);
  CK(cudaGraphExecDestroy(ge)); CK(cudaGraphDestroy(g)); CK(cudaStreamDestroy(st));
  for (int c = 0; c < copies; c++) { if (separate) { cudaFree(W[c]); cudaFree(S[c]); cudaFree(Z[c]); } if (private_ws || c == 0) { cudaFree(P[c]); cudaFree(CNT[c]); } }
  if (!separate) { cudaFree(big); cudaFree(bigs); cudaFree(bigz); }
  cudaFree(x); cudaFree(y);
}
int main() {
  for (int rep = 0; rep < 2; rep++) {
    run<float>("y32", y32w2, 2, 95, false, false, 200);
    run<half>("y16", y16w2, 2, 95, false, false, 200);
    run<half>("y16", y16w2, 2, 61, false, false, 96);
    run<half>("y16", y16w2, 2, 61, true, false, 96);
    run<half>("y16", y16w2, 2, 61, true, true, 96);
    run<float>("y32", y32w4, 4, 48, false, false, 200);
    run<half>("y16", y16w4, 4, 31, true, true, 96);
    run<half>("y16", y16w2, 2, 61, true, true, 96, "W2");
    run<half>("y16", y16w4, 4, 31, true, true, 96, "W4");
    run<half>("y16", y16w2, 2, 95, false, false, 200, "W2");
  }
}
