// The persistent dp4a GEMV (kernels.cuh) against the shipped grid-split and sliced kernels (k.cuh, from
// ../dq_rows/gen.py): same weights, checked against the shipped kernel, timed in 200-launch CUDA graphs over
// > 400 MB of weight copies (cold L2), medians of 9 (../dq_rows/common.cuh).
#include "k.cuh"
#include "../dq_rows/common.cuh"
#include "kernels.cuh"

typedef void (*Persist)(const half*, const int*, const half*, float*, const signed char*, int, int);
struct PVar { const char* name; Persist f; int warps; };

static int sms;

static void run(const char* name, Persist f, int warps, int N, int B, std::vector<float>* ref) {
  int per = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, f, warps * 32, 0));
  const int ntiles = N / 32, grid = std::min(ntiles, sms * per);
  char tag[64]; snprintf(tag, sizeof tag, "%s x%d", name, per);
  timeit(tag, N, B, [&](int j, cudaStream_t st) {
    f<<<grid, warps * 32, 0, st>>>(dS + j * sn, dW + j * wn, dx, dy, dZ + j * sn, N, ntiles);
  }, ref);
}

static void shape(const char* tag, Ship ship, int split, Rows rows, int cpt, int N, int B, std::vector<PVar> ps) {
  setup(N, B);
  std::vector<float> ref;
  timeit(tag, N, B, [&](int j, cudaStream_t st) {
    ship<<<dim3(N / 128, split, 1), 128, 0, st>>>(cnt, P, dS + j * sn, dW + j * wn, dx, dy, dZ + j * sn, N, 1);
  }, &ref);
  if (rows)
    timeit("sliced", N, B, [&](int j, cudaStream_t st) {
      rows<<<dim3(N / 32, 1, 1), 32 * (32 / cpt), 0, st>>>(dS + j * sn, dW + j * wn, dx, dy, dZ + j * sn, 1);
    }, &ref);
  for (auto& p : ps) run(p.name, p.f, p.warps, N, B, &ref);
}

#define PV(b) {"p32", persist<b, 32>, 32}, {"p16", persist<b, 16>, 16}, {"p8", persist<b, 8>, 8}, \
  {"p16 ahead2", persist<b, 16, 0, 2>, 16}, {"p32 ahead2", persist<b, 32, 0, 2>, 32}, \
  {"read p32", persist<b, 32, 1>, 32}, {"read p16", persist<b, 16, 1>, 16}, {"read p16 ahead2", persist<b, 16, 1, 2>, 16}, \
  {"mask p16", persist<b, 16, 0, 1, 1>, 16}, {"mask p32", persist<b, 32, 0, 1, 1>, 32}
int main() {
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  for (int rep = 0; rep < 2; rep++) {
    shape("ship 4096 W2", ship_4096_2, 16, rows_4096_2_t2_r1, 2, 4096, 2, {PV(2)});
    shape("ship 4096 W4", ship_4096_4, 16, rows_4096_4_t1_r1, 1, 4096, 4, {PV(4)});
    shape("ship 11008 W2", ship_11008_2, 8, nullptr, 0, 11008, 2, {PV(2)});
    shape("ship 11008 W4", ship_11008_4, 8, nullptr, 0, 11008, 4, {PV(4)});
    shape("ship 14336 W2", ship_14336_2, 8, nullptr, 0, 14336, 2, {PV(2)});
    shape("ship 14336 W4", ship_14336_4, 8, nullptr, 0, 14336, 4, {PV(4)});
  }
}
