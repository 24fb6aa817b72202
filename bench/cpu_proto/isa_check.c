/* Cross-ISA agreement of codegen/cpu/lut_kernels.c, for a machine that has AVX-512 when the development host does
 * not (the GPU machine's Xeon: the device tool): the SwiGLU prologue and the table build of the AVX-512, AVX2 and
 * portable builds must agree bit for bit (the pytest twin, tests/codegen/test_cpu_kernels.py
 * test_every_isa_builds_the_same_tables*, only compares the builds the test host can run). Build (from the
 * repository root) and run:
 *   for v in "512:-mavx512f -mavx512bw -mavx512vl -mfma -mf16c" "256:-mavx2 -mfma -mf16c" "0:"; do
 *     gcc -O3 -fPIC -std=c11 -Icodegen/cpu -c codegen/cpu/lut_kernels.c ${v#*:} -DLUTC_ISA=${v%%:*} \
 *         -o build/isa_check/k${v%%:*}.o; done
 *   gcc -O2 bench/cpu_proto/isa_check.c build/isa_check/k*.o -o build/isa_check/check -lm
 *   ./build/isa_check/check   # (on the device: carry build/isa_check)
 * One line per (K, group); exit status 1 on a mismatch. Run 2026-12-06 on the H100 machine's Intel Xeon
 * (avx512f/bw/vl): all six cases equal. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define DECL(S) \
  int32_t lutc_swiglu_##S(const float*, int64_t, float*); \
  int32_t lutc_precompute_##S(const float*, int64_t, int64_t, int64_t, int8_t*, float*, float*);
DECL(avx512) DECL(avx2) DECL(generic)
static uint64_t st = 88172645463325252ull;
static float rnd(void) { st ^= st << 13; st ^= st >> 7; st ^= st << 17; return (float)((double)(st >> 11) / 9007199254740992.0 * 2 - 1); }
int main(void) {
  int bad = 0;
  const int64_t ks[] = {1000, 4096, 576, 1536, 300, 257};
  const int64_t gs[] = {128, 64, 32, 16, 256, 48};
  for (int c = 0; c < 6; ++c) {
    int64_t k = ks[c], g = gs[c], kp = (k + g - 1) / g * g;
    float* x = malloc(sizeof(float) * 2 * k);
    for (int64_t i = 0; i < 2 * k; ++i) x[i] = rnd() * (c + 1) * 3;
    x[0] = 0.0f; x[1] = -0.0f; x[2] = 88.0f; x[3] = -88.0f; x[4] = 1e-30f; x[5] = -100.0f;
    float *s512 = malloc(4 * k), *s2 = malloc(4 * k), *s0 = malloc(4 * k);
    lutc_swiglu_avx512(x, k, s512); lutc_swiglu_avx2(x, k, s2); lutc_swiglu_generic(x, k, s0);
    int sw = memcmp(s512, s0, 4 * k) || memcmp(s2, s0, 4 * k);
    int8_t *t512 = malloc(kp * 4), *t2 = malloc(kp * 4), *t0 = malloc(kp * 4);
    float sc[3][512], xs[3][512];
    lutc_precompute_avx512(s0, k, kp, g, t512, sc[0], xs[0]);
    lutc_precompute_avx2(s0, k, kp, g, t2, sc[1], xs[1]);
    lutc_precompute_generic(s0, k, kp, g, t0, sc[2], xs[2]);
    int64_t groups = kp / g;
    int tb = memcmp(t512, t0, kp * 4) || memcmp(t2, t0, kp * 4) || memcmp(sc[0], sc[2], 4 * groups) ||
             memcmp(sc[1], sc[2], 4 * groups) || memcmp(xs[0], xs[2], 4 * groups) || memcmp(xs[1], xs[2], 4 * groups);
    printf("k=%ld group=%ld: swiglu %s, tables %s\n", (long)k, (long)g, sw ? "DIFFER" : "equal", tb ? "DIFFER" : "equal");
    bad |= sw | tb;
  }
  return bad;
}
