/* Runs one ISA variant of the LUT micro-kernels (lut_kernels.c, built with the same LUTC_ISA and -DHARNESS_SYM) on
 * inputs from a file, for kernels that cannot run on this machine: test_cpu_neon.py builds it for aarch64 and runs
 * it under qemu-user.
 *
 * In (argv[1]): int64 m, k, k_pad, group, n_pad, bits, tile_bytes, row_block; float x[m][k]; uint8 w[tiles][tile_bytes];
 * uint16 s[tiles][groups][64]; int8 z[tiles][groups][64]; float norm_w[k].
 * Out (argv[2]): float y[m][n_pad] (tables from x), then float y_norm[m][n_pad] (tables from rms_norm(x) * norm_w,
 * eps 1e-5), each as the entry points compute them (tiles split in two ranges, rows in blocks of row_block). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, HARNESS_SYM)

int32_t FN(lutc_precompute)(const float*, int64_t, int64_t, int64_t, int8_t*, float*, float*);
int32_t FN(lutc_gemv)(const int8_t*, const float*, const float*, const uint8_t*, const uint16_t*, const int8_t*, float*,
                      int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                      int64_t);
int32_t FN(lutc_rmsnorm)(const float*, const float*, int64_t, float, float*);

static void* read_n(FILE* f, size_t size, size_t n) {
  void* p = calloc(n ? n : 1, size);
  if (!p || fread(p, size, n, f) != n) {
    fprintf(stderr, "short input\n");
    exit(2);
  }
  return p;
}

static int matmul(const float* x, int64_t m, int64_t k, int64_t k_pad, int64_t group, int64_t n_pad, int64_t bits,
                  int64_t row_block, const uint8_t* w, const uint16_t* s, const int8_t* z, float* y) {
  const int64_t runs = k_pad / 4, groups = k_pad / group, tiles = n_pad / 64;
  int8_t* tables = calloc((size_t)(m * runs * 16), 1);
  float *tscale = calloc((size_t)(m * groups), 4), *xsum = calloc((size_t)(m * groups), 4);
  int rc = 0;
  for (int64_t r = 0; r < m; ++r)
    rc |= FN(lutc_precompute)(x + r * k, k, k_pad, group, tables + r * runs * 16, tscale + r * groups, xsum + r * groups);
  /* two tasks over the tiles, as a 2-thread driver splits them; the most tiles per pass the kernel has */
  const int64_t half = (tiles + 1) / 2;
  rc |= FN(lutc_gemv)(tables, tscale, xsum, w, s, z, y, m, n_pad, runs, groups, bits, 0, half, 0, m, 1, row_block, 4);
  rc |= FN(lutc_gemv)(tables, tscale, xsum, w, s, z, y, m, n_pad, runs, groups, bits, half, tiles, 0, m, 1, row_block, 4);
  free(tables), free(tscale), free(xsum);
  return rc;
}

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  FILE* f = fopen(argv[1], "rb");
  if (!f) return 2;
  int64_t* h = read_n(f, 8, 8);
  const int64_t m = h[0], k = h[1], k_pad = h[2], group = h[3], n_pad = h[4], bits = h[5], tb = h[6], rb = h[7];
  const int64_t tiles = n_pad / 64, groups = k_pad / group;
  float* x = read_n(f, 4, (size_t)(m * k));
  uint8_t* w = read_n(f, 1, (size_t)(tiles * tb));
  uint16_t* s = read_n(f, 2, (size_t)(tiles * groups * 64));
  int8_t* z = read_n(f, 1, (size_t)(tiles * groups * 64));
  float* nw = read_n(f, 4, (size_t)k);
  fclose(f);
  float *y = calloc((size_t)(m * n_pad), 4), *yn = calloc((size_t)(m * n_pad), 4), *xn = calloc((size_t)(m * k), 4);
  int rc = matmul(x, m, k, k_pad, group, n_pad, bits, rb, w, s, z, y);
  for (int64_t r = 0; r < m; ++r) rc |= FN(lutc_rmsnorm)(x + r * k, nw, k, 1e-5f, xn + r * k);
  rc |= matmul(xn, m, k, k_pad, group, n_pad, bits, rb, w, s, z, yn);
  if (rc) {
    fprintf(stderr, "a kernel returned an error\n");
    return 3;
  }
  FILE* o = fopen(argv[2], "wb");
  if (!o || fwrite(y, 4, (size_t)(m * n_pad), o) != (size_t)(m * n_pad) ||
      fwrite(yn, 4, (size_t)(m * n_pad), o) != (size_t)(m * n_pad))
    return 4;
  fclose(o);
  return 0;
}
