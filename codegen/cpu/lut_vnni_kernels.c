/* Many-row LUT matmuls with AVX-512 VNNI, for AVX-512 hosts without AMX (AMD Zen 4/5, Intel Ice Lake...): the
 * AMX kernel's operands (lut_amx_kernels.c: int8 activations from lutc_int8_quantize, weights unpacked per group to
 * w8 = 2 (q - z) in the B layout) multiplied by vpdpbusd, 64 multiply-adds per instruction whatever the width,
 * where the lookups take one vpshufb and one vpmaddubsw per 64 weights, row and pair of bit planes (Zen 5 runs
 * both on the same two pipes: ~3.3 cycles per 256 W2 weights and row, 6.6 for W4). vpdpbusd multiplies unsigned
 * by signed bytes: the activations enter as xq + 128, and 128 * sum_k w8 (per row of W and group, summed while
 * unpacking) comes off in the epilogue, so the int32 sums equal the AMX kernel's exactly. Compiled for the AVX-512
 * variant only (-mavx512vnni); the Python side picks it only where the CPU has avx512_vnni. */
#include "lut_int8_common.h"
#include <stdlib.h>

/* activation rows per pass: 4 x 4 int32 accumulators and 4 weight vectors (6 rows spilled and ran 2x slower, measured
 * with the earlier array-of-accumulators code at -O3; not measured again since the -O2 fix) */
#define VR 4

/* acc[64] (float) += a * s/2 * (c - 128 colsum): one activation row's sums of one pass over a group */
static inline __attribute__((always_inline)) void vnni_epilogue(const __m512i c0, const __m512i c1, const __m512i c2,
                                                              const __m512i c3, const __m512i cs[4],
                                                              const __m512 sf[4], float a, float* acc) {
  const __m512 ar = _mm512_set1_ps(a);
  const __m512i c[4] = {c0, c1, c2, c3};
#pragma GCC unroll 4 /* at -O2 a rolled loop stores the 16 accumulators to the stack first */
  for (int q = 0; q < 4; ++q) {
    const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(c[q], cs[q]));
    _mm512_store_ps(acc + 16 * q, _mm512_fmadd_ps(v, _mm512_mul_ps(ar, sf[q]), _mm512_load_ps(acc + 16 * q)));
  }
}

/* one row's step: its 4 activation bytes broadcast, times the 4 weight vectors */
#define VNNI_ROW(r)                                                                              \
  if (R > r) {                                                                                   \
    int32_t x4;                                                                                  \
    memcpy(&x4, xb + r * gs + 4 * j, 4);                                                         \
    const __m512i xa = _mm512_set1_epi32(x4);                                                    \
    c##r##0 = _mm512_dpbusd_epi32(c##r##0, xa, b0), c##r##1 = _mm512_dpbusd_epi32(c##r##1, xa, b1); \
    c##r##2 = _mm512_dpbusd_epi32(c##r##2, xa, b2), c##r##3 = _mm512_dpbusd_epi32(c##r##3, xa, b3); \
  }

/* acc[r][64] (float) += a[r] * s/2 * (sum_k (xq + 128) w8 - 128 colsum) for the rows of one pass over a group;
 * xb: their activations + 128, gs bytes per row.
 * The accumulators are 16 named variables and the file is built at -O2 (codegen/cpu/isa.py): with an array of
 * them, or at -O3, gcc 12 copied every accumulator into a second register and back on each step (33-35 moves per
 * 16 vpdpbusd, ~0.9 cycles per vpdpbusd on Zen 5); now the loop is the 16 vpdpbusd, 4 loads and 4 broadcasts. */
static inline __attribute__((always_inline)) void vnni_rows(const uint8_t* xb, int64_t gs, const int8_t* bt,
                                                          int64_t rpg, const __m512i cs[4], const __m512 sf[4],
                                                          const float* a, int64_t groups, float* acc, const int R) {
  __m512i c00 = _mm512_setzero_si512(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00,
          c13 = c00, c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
  for (int64_t j = 0; j < rpg; ++j) {
    const __m512i b0 = _mm512_load_si512((const void*)(bt + (0 * rpg + j) * 64));
    const __m512i b1 = _mm512_load_si512((const void*)(bt + (1 * rpg + j) * 64));
    const __m512i b2 = _mm512_load_si512((const void*)(bt + (2 * rpg + j) * 64));
    const __m512i b3 = _mm512_load_si512((const void*)(bt + (3 * rpg + j) * 64));
    VNNI_ROW(0) VNNI_ROW(1) VNNI_ROW(2) VNNI_ROW(3)
  }
  vnni_epilogue(c00, c01, c02, c03, cs, sf, a[0], acc);
  if (R > 1) vnni_epilogue(c10, c11, c12, c13, cs, sf, a[groups], acc + 64);
  if (R > 2) vnni_epilogue(c20, c21, c22, c23, cs, sf, a[2 * groups], acc + 128);
  if (R > 3) vnni_epilogue(c30, c31, c32, c33, cs, sf, a[3 * groups], acc + 192);
}
#undef VNNI_ROW

/* The AMX kernel's entry point and conventions (lutc_amx_gemm; the rows need not start at a multiple of 16). */
int32_t SYM(lutc_vnni_gemm)(const int8_t* xq, const float* ascale, const float* xsum, const uint8_t* w,
                            const uint16_t* s, const int8_t* z, float* y, int64_t m, int64_t n_pad, int64_t runs,
                            int64_t groups, int64_t bits, int64_t tile0, int64_t tile1, int64_t row0, int64_t row1,
                            int64_t rows, int64_t mblock, int64_t tiles) {
  (void)xsum, (void)rows, (void)tiles;
  const int64_t rpg = runs / groups, gs = 4 * rpg, m16 = (m + 15) & ~(int64_t)15;
  if (runs % groups || gs % 16 || rpg > MAX_RPG || row0 < 0 || row1 > m || bits < 1 || bits > 4) return -1;
  if (row0 >= row1 || tile0 >= tile1) return 0;
  const int64_t mb = mblock > 0 ? mblock : row1 - row0;
  float* acc = aligned_alloc(64, (size_t)mb * 64 * sizeof(float));
  /* the rows' activations + 128 (vpdpbusd's unsigned operand), in xq's layout, once per call: every tile reads
   * them (biasing them in each row pass instead cost 5-7% at 128 and 37 rows, W2/W4 4096x4096, AMD Zen 4) */
  uint8_t* xu = aligned_alloc(64, (size_t)(groups * m16 * gs));
  if (!acc || !xu) {
    free(acc), free(xu);
    return -1;
  }
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t r = row0; r < row1; ++r)
      for (int64_t i = 0; i < gs; i += 16) {
        const int64_t o = (g * m16 + r) * gs + i;
        const __m128i v = _mm_loadu_si128((const __m128i*)(xq + o));
        _mm_store_si128((__m128i*)(xu + o), _mm_xor_si128(v, _mm_set1_epi8((char)0x80)));
      }
  __m512i e[4];
  plane_tables(e);
  const __m512i ones = _mm512_set1_epi8(1);
  int8_t bt[4 * MAX_RPG * 64] __attribute__((aligned(64)));
  for (int64_t b0 = row0; b0 < row1; b0 += mb) {
    const int64_t b1 = b0 + mb < row1 ? b0 + mb : row1;
    for (int64_t t = tile0; t < tile1; ++t) {
      memset(acc, 0, (size_t)(b1 - b0) * 64 * sizeof(float));
      for (int64_t g = 0; g < groups; ++g) {
        unpack_group(w + t * tile_bytes(runs, bits), runs, bits, g * rpg, z + (t * groups + g) * 64, rpg, e, bt);
        __m512 sf[4];
        __m512i cs[4];
        half_scales(s + (t * groups + g) * 64, sf);
        for (int q = 0; q < 4; ++q) {
          __m512i sum = _mm512_setzero_si512(); /* sum_k w8 per row of W: 1 x each byte, 4 k per dword */
          for (int64_t j = 0; j < rpg; ++j)
            sum = _mm512_dpbusd_epi32(sum, ones, _mm512_load_si512((const void*)(bt + (q * rpg + j) * 64)));
          cs[q] = _mm512_slli_epi32(sum, 7);
        }
        for (int64_t r = b0; r < b1; r += VR) {
          const uint8_t* xr = xu + (g * m16 + r) * gs;
          const float* ar = ascale + r * groups + g;
          float* ac = acc + (r - b0) * 64;
          switch (b1 - r < VR ? b1 - r : VR) {
            case 4: vnni_rows(xr, gs, bt, rpg, cs, sf, ar, groups, ac, 4); break;
            case 3: vnni_rows(xr, gs, bt, rpg, cs, sf, ar, groups, ac, 3); break;
            case 2: vnni_rows(xr, gs, bt, rpg, cs, sf, ar, groups, ac, 2); break;
            default: vnni_rows(xr, gs, bt, rpg, cs, sf, ar, groups, ac, 1); break;
          }
        }
      }
      for (int64_t r = b0; r < b1; ++r) memcpy(y + r * n_pad + t * 64, acc + (r - b0) * 64, 64 * sizeof(float));
    }
  }
  free(acc), free(xu);
  return 0;
}
