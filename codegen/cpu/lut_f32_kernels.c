/* Float-table LUT micro-kernels (QuantConfig(table_dtype="f32")): the same weights (layout "x86-g4-n64-v2", see
 * lut_kernels.c) looked up in fp32 tables, accumulated in fp32 per K group, so the result is the dequantized
 * matmul up to fp32 rounding (no table quantization).
 *
 * Tables (lutc_precompute_f32): per run of 4 activations all 16 signed sums T[i] = sum_b (+-x_b) (bit b of i
 * chooses the sign, so T[15-i] = -T[i] exactly: rounding is sign-symmetric), 64 bytes per run, one cache line.
 * Table scales are 1; xsum per group is -sum T[0] over its runs.
 *
 * Lookups: a 64-byte weight vector holds, in dword j, byte 4j+B = plane (B&1) of row 2j+(B>>1) (low nibble) and of
 * row 2j+(B>>1)+32 (high nibble). Shifting the vector right by 8B+4h puts one of those nibbles in the low bits
 * of every dword, which is all the index a permute reads: AVX-512 vpermps over the 16-entry table (16 lookups per
 * instruction), AVX2 two vpermps over the 8-entry halves blended on the nibble's top bit (8 lookups).
 */
#include "lut_common.h"

int32_t SYM(lutc_precompute_f32)(const float* x, int64_t k, int64_t k_pad, int64_t group, float* tables,
                                 float* tscale, float* xsum) {
  if (group <= 0 || group % 4 || k_pad % group) return -1;
  const int64_t rpg = group / 4;
#if LUTC_ISA == 512
  /* sign of x_b in entry e: + when bit b of e is set */
  const __m512 sg[4] = {_mm512_setr_ps(-1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1),
                        _mm512_setr_ps(-1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1),
                        _mm512_setr_ps(-1, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1, 1, 1, 1, 1),
                        _mm512_setr_ps(-1, -1, -1, -1, -1, -1, -1, -1, 1, 1, 1, 1, 1, 1, 1, 1)};
#elif LUTC_ISA == 256
  const __m256 sg[4] = {_mm256_setr_ps(-1, 1, -1, 1, -1, 1, -1, 1), _mm256_setr_ps(-1, -1, 1, 1, -1, -1, 1, 1),
                        _mm256_setr_ps(-1, -1, -1, -1, 1, 1, 1, 1), _mm256_set1_ps(-1)};
#endif
  for (int64_t g = 0; g < k_pad / group; ++g) {
    double isum = 0.0;
    for (int64_t r = 0; r < rpg; ++r) {
      const int64_t j = g * rpg + r;
      float v[4];
      for (int b = 0; b < 4; ++b) v[b] = 4 * j + b < k ? x[4 * j + b] : 0.0f;
      float* t = tables + j * 16;
      /* ((+-x0 +- x1) +- x2) +- x3: multiplying by +-1 is exact, so each fma is one rounded add */
#if LUTC_ISA == 512
      __m512 e = _mm512_mul_ps(_mm512_set1_ps(v[0]), sg[0]);
      for (int b = 1; b < 4; ++b) e = _mm512_fmadd_ps(_mm512_set1_ps(v[b]), sg[b], e);
      _mm512_storeu_ps(t, e);
#elif LUTC_ISA == 256
      __m256 e = _mm256_mul_ps(_mm256_set1_ps(v[0]), sg[0]);
      for (int b = 1; b < 4; ++b) e = _mm256_fmadd_ps(_mm256_set1_ps(v[b]), sg[b], e);
      _mm256_storeu_ps(t, e);
      for (int i = 0; i < 8; ++i) t[15 - i] = -t[i];
#else
      for (int i = 0; i < 8; ++i) {
        float e = (i & 1) ? v[0] : -v[0];
        for (int b = 1; b < 4; ++b) e += ((i >> b) & 1) ? v[b] : -v[b];
        t[i] = e;
        t[15 - i] = -e;
      }
#endif
      isum -= t[0];
    }
    tscale[g] = 1.0f;
    xsum[g] = (float)isum;
  }
  return 0;
}

/* out[i] += s_i/2 * acc[i] - s_i/2 * z'_i * xsum, for the 64 rows of a tile */
static inline void flush_f32(const float* acc, float xs, const uint16_t* s, const int8_t* z, float* out) {
  for (int i = 0; i < 64; ++i) {
    const float h = 0.5f * half_to_float(s[i]);
    out[i] += acc[i] * h - h * (float)z[i] * xs;
  }
}

/* plane weights of pair p: 4^p and 2 * 4^p (0 for the padding plane of an odd bit count) */
#define PLANE_WEIGHTS(p)                                   \
  const float w0 = (float)(1 << (2 * (p)));                \
  const float w1 = ((p) == pairs - 1 && (bits & 1)) ? 0.0f : 2.0f * w0;

/* the lines of pair p over a group's runs (layout x86-g4-n64-v2, lut_common.h): full lines `stride` apart, or
 * (half: an odd width's last plane) 32-byte half lines, read in the full lines' byte order */
#define WEIGHT_LINES(p)                                                                                    \
  const int half = (p) == bits / 2;                                                                        \
  const int64_t stride = half ? 32 : (bits / 2) * 64;                                                      \
  const uint8_t* wp = half ? half_lines(w, runs, bits) + (g * rpg) * 32 : w + ((g * rpg) * (bits / 2) + (p)) * 64;

#if LUTC_ISA == 512
/* R rows of one 64-row tile: the 8 shifted index vectors of a weight load serve all R rows. acc[row][B + 4h]
 * lane j sums plane B&1 of row 2j + (B>>1) + 32h over a pair; ga[row][2h + (B>>1)] the weighted planes of a group. */
static inline __attribute__((always_inline)) void tile_rows_f32(
    const float* tables, const float* xsum, const uint8_t* w, const uint16_t* s, const int8_t* z, float* y,
    int64_t n_pad, int64_t runs, int64_t groups, int64_t pairs, int64_t bits, const int R) {
  const int64_t rpg = runs / groups;
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const __m512 half = _mm512_set1_ps(0.5f);
  for (int row = 0; row < R; ++row)
    for (int q = 0; q < 4; ++q) _mm512_storeu_ps(y + row * n_pad + q * 16, _mm512_setzero_ps());
  for (int64_t g = 0; g < groups; ++g) {
    __m512 ga[4][4];
    for (int row = 0; row < R; ++row)
      for (int i = 0; i < 4; ++i) ga[row][i] = _mm512_setzero_ps();
    for (int64_t p = 0; p < pairs; ++p) {
      PLANE_WEIGHTS(p)
      __m512 acc[4][8];
      for (int row = 0; row < R; ++row)
        for (int i = 0; i < 8; ++i) acc[row][i] = _mm512_setzero_ps();
      WEIGHT_LINES(p)
      const float* tp = tables + (g * rpg) * 16;
      for (int64_t r = 0; r < rpg; ++r) {
        _mm_prefetch((const char*)(wp + (r + PREFETCH_RUNS) * stride), _MM_HINT_T0);
        const __m512i wv = line512(w, runs, bits, (int)(bits / 2), g * rpg + r, (int)p);
        const __m512i ix[8] = {wv, _mm512_srli_epi32(wv, 8), _mm512_srli_epi32(wv, 16), _mm512_srli_epi32(wv, 24),
                               _mm512_srli_epi32(wv, 4), _mm512_srli_epi32(wv, 12), _mm512_srli_epi32(wv, 20),
                               _mm512_srli_epi32(wv, 28)};
#pragma GCC unroll 4
        for (int row = 0; row < R; ++row) {
          const __m512 tab = _mm512_loadu_ps(tp + (row * runs + r) * 16);
#pragma GCC unroll 8
          for (int i = 0; i < 8; ++i) acc[row][i] = _mm512_add_ps(acc[row][i], _mm512_permutexvar_ps(ix[i], tab));
        }
      }
      const __m512 v0 = _mm512_set1_ps(w0), v1 = _mm512_set1_ps(w1);
      for (int row = 0; row < R; ++row)
        for (int h = 0; h < 2; ++h)
          for (int b = 0; b < 2; ++b) {
            __m512 a = _mm512_fmadd_ps(acc[row][2 * b + 4 * h], v0, ga[row][2 * h + b]);
            ga[row][2 * h + b] = _mm512_fmadd_ps(acc[row][2 * b + 1 + 4 * h], v1, a);
          }
    }
    __m512 hs[4], hz[4];
    for (int q = 0; q < 4; ++q) {
      hs[q] = _mm512_mul_ps(half, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(s + g * 64 + q * 16))));
      hz[q] = _mm512_mul_ps(hs[q], _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(z + g * 64 + q * 16)))));
    }
    for (int row = 0; row < R; ++row) {
      /* rows 0-15, 16-31 interleave ga[row][0] (even rows) with ga[row][1] (odd); 32-63 likewise from h = 1 */
      const __m512 rv[4] = {_mm512_permutex2var_ps(ga[row][0], lo, ga[row][1]),
                            _mm512_permutex2var_ps(ga[row][0], hi, ga[row][1]),
                            _mm512_permutex2var_ps(ga[row][2], lo, ga[row][3]),
                            _mm512_permutex2var_ps(ga[row][2], hi, ga[row][3])};
      const __m512 xs = _mm512_set1_ps(xsum[row * groups + g]);
      for (int q = 0; q < 4; ++q) {
        float* out = y + row * n_pad + q * 16;
        const __m512 o = _mm512_fmadd_ps(rv[q], hs[q], _mm512_loadu_ps(out));
        _mm512_storeu_ps(out, _mm512_fnmadd_ps(hz[q], xs, o));
      }
    }
  }
}

static inline void tile_gemv_f32(const float* tables, const float* tscale, const float* xsum, const uint8_t* w,
                                 const uint16_t* s, const int8_t* z, float* y, int64_t m, int64_t n_pad,
                                 int64_t runs, int64_t groups, int64_t pairs, int64_t bits, int64_t rows,
                                 int64_t nt, int64_t dt) {
  (void)nt, (void)dt; /* one tile per pass (LUTC_GEMV's MAX_TILES is 1) */
  (void)tscale; /* float tables are not scaled */
  for (int64_t row = 0; row < m;) {
    const int64_t left = m - row, r = left < rows ? left : rows;
#define ROWS(R) tile_rows_f32(tables + row * runs * 16, xsum + row * groups, w, s, z, y + row * n_pad, n_pad, runs, \
                              groups, pairs, bits, R)
    if (r >= 4) { ROWS(4); row += 4; }
    else if (r >= 2) { ROWS(2); row += 2; }
    else { ROWS(1); row += 1; }
#undef ROWS
  }
}
#else
/* One row of one tile. acc[i] accumulates row i of the tile over a group, planes weighted. */
static inline void tile_row_f32(const float* tables, const float* xsum, const uint8_t* w, const uint16_t* s,
                                const int8_t* z, float* out, int64_t runs, int64_t groups, int64_t pairs,
                                int64_t bits) {
  const int64_t rpg = runs / groups;
  float y[64];
  for (int i = 0; i < 64; ++i) y[i] = 0.0f;
  for (int64_t g = 0; g < groups; ++g) {
    float acc[64];
    for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
    for (int64_t p = 0; p < pairs; ++p) {
      PLANE_WEIGHTS(p)
      const float* tp = tables + (g * rpg) * 16;
#if LUTC_ISA == 256
      WEIGHT_LINES(p)
      for (int c = 0; c < 2; ++c) { /* bytes 32c..32c+31: rows 16c..16c+15 and 32+16c..47+16c */
        __m256 a[8];
        for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_ps();
        for (int64_t r = 0; r < rpg; ++r) {
          const __m256i wv = half ? _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(wp + r * 32 + 16 * c)))
                                  : _mm256_loadu_si256((const __m256i*)(wp + r * stride + 32 * c));
          const __m256 tlo = _mm256_loadu_ps(tp + r * 16), thi = _mm256_loadu_ps(tp + r * 16 + 8);
          /* index: nibble at bit sh (the permute reads bits 0-2); its bit 3 shifted to the sign picks the half */
#define LOOK(i, sh)                                                                                         \
  {                                                                                                        \
    const __m256i ix = _mm256_srli_epi32(wv, sh);                                                          \
    const __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(wv, 28 - (sh)));                              \
    a[i] = _mm256_add_ps(a[i], _mm256_blendv_ps(_mm256_permutevar8x32_ps(tlo, ix),                          \
                                                _mm256_permutevar8x32_ps(thi, ix), sel));                  \
  }
          LOOK(0, 0) LOOK(1, 8) LOOK(2, 16) LOOK(3, 24) LOOK(4, 4) LOOK(5, 12) LOOK(6, 20) LOOK(7, 28)
#undef LOOK
        }
        float t[8][8];
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(t[i], a[i]);
        for (int i = 0; i < 8; ++i) /* i = B + 4h: plane B&1 of row 16c + 2j + (B>>1) + 32h */
          for (int j = 0; j < 8; ++j)
            acc[16 * c + 2 * j + ((i & 3) >> 1) + 32 * (i >> 2)] += t[i][j] * ((i & 1) ? w1 : w0);
      }
#else
      for (int64_t r = 0; r < rpg; ++r) {
        const float* tab = tp + r * 16;
        uint8_t wv[64];
        line_bytes(w, runs, bits, g * rpg + r, p, wv);
        for (int i = 0; i < 32; ++i) {
          const uint8_t b0 = wv[2 * i], b1 = wv[2 * i + 1];
          acc[i] += w0 * tab[b0 & 15] + w1 * tab[b1 & 15];
          acc[i + 32] += w0 * tab[b0 >> 4] + w1 * tab[b1 >> 4];
        }
      }
#endif
    }
    flush_f32(acc, xsum[g], s + g * 64, z + g * 64, y);
  }
  for (int i = 0; i < 64; ++i) out[i] = y[i];
}

static inline void tile_gemv_f32(const float* tables, const float* tscale, const float* xsum, const uint8_t* w,
                                 const uint16_t* s, const int8_t* z, float* y, int64_t m, int64_t n_pad,
                                 int64_t runs, int64_t groups, int64_t pairs, int64_t bits, int64_t rows,
                                 int64_t nt, int64_t dt) {
  (void)nt, (void)dt; /* one tile per pass (LUTC_GEMV's MAX_TILES is 1) */
  (void)tscale, (void)rows; /* unscaled tables; one row per pass */
  for (int64_t row = 0; row < m; ++row)
    tile_row_f32(tables + row * runs * 16, xsum + row * groups, w, s, z, y + row * n_pad, runs, groups, pairs, bits);
}
#endif

#define LUTC_GEMV_MAX_BITS 8 /* float tables: any number of plane pairs */
LUTC_GEMV(lutc_gemv_f32, float, tile_gemv_f32, 1)
