// The dp4a GEMV with K split inside the block (rows_*) against the shipped one (ship_*, K split over blocks, the
// last block reduces): same weights, checked against each other, timed in 200-launch CUDA graphs over > 400 MB
// of weight copies (cold L2), medians of 9.
#include "k.cuh"
#include "common.cuh"

struct Variant { const char* name; Rows f; int cpt, rw; };

static void shape(const char* tag, Ship ship, int split, int N, int B, std::vector<Variant> rows) {
  setup(N, B);
  std::vector<float> ref;
  timeit(tag, N, B, [&](int j, cudaStream_t st) {
    ship<<<dim3(N / 128, split, 1), 128, 0, st>>>(cnt, P, dS + j * sn, dW + j * wn, dx, dy, dZ + j * sn, N, 1);
  }, &ref);
  for (auto& v : rows) {
    const int rb = 32 * v.rw, threads = rb * (32 / v.cpt);
    timeit(v.name, N, B, [&](int j, cudaStream_t st) {
      v.f<<<dim3(N / rb, 1, 1), threads, 0, st>>>(dS + j * sn, dW + j * wn, dx, dy, dZ + j * sn, 1);
    }, &ref);
  }
}

#define V(n, b, t, r) {"rows t" #t " r" #r, rows_##n##_##b##_t##t##_r##r, t, r}
int main() {   // the shipped choice at N = 4096, and the same form where the grid split is shipped
  for (int rep = 0; rep < 2; rep++) {
    shape("ship 4096 W2", ship_4096_2, 16, 4096, 2, {V(4096, 2, 2, 1)});
    shape("ship 4096 W4", ship_4096_4, 16, 4096, 4, {V(4096, 4, 1, 1)});
    shape("ship 11008 W2", ship_11008_2, 8, 11008, 2, {V(11008, 2, 4, 1)});
    shape("ship 11008 W4", ship_11008_4, 8, 11008, 4, {V(11008, 4, 2, 1)});
    shape("ship 14336 W2", ship_14336_2, 8, 14336, 2, {V(14336, 2, 4, 1)});
    shape("ship 14336 W4", ship_14336_4, 8, 14336, 4, {V(14336, 4, 2, 1)});
  }
}
