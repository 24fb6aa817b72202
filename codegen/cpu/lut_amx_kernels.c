/* Many-row LUT matmuls on Intel AMX (Sapphire Rapids and later): the weights of layout "x86-g4-n64-v2" are
 * unpacked tile by tile into int8 and multiplied with int8 activations on the tile unit (TDPBSSD: 16 x 16 x 64
 * multiply-adds per instruction), instead of one vpshufb lookup per 64 weights and row. Compiled for the AVX-512
 * variant only (LUTC_ISA = 512, with -mamx-tile -mamx-int8); the Python side picks these entry points only where
 * the CPU has AMX (runtime/isa.py), and they refuse to run (return -1) where the kernel does not grant it.
 *
 * Activations (lutc_int8_quantize, per row): int8 with one scale per row and K group, a = max|x| / 127,
 * xq = round(x / a), and the group sums a * sum xq (for the offsets of real-valued zero points). xq is stored by
 * group, [groups][rows rounded up to 16][group], in the buffer the int8 tables would use (it holds 4 k_pad bytes
 * per row, enough from 4 rows on), the rows past the last one zeroed.
 *
 * Weights: a plane index (4 bits: 4 consecutive k) becomes 4 bytes of +-1 through a 16-entry dword table
 * (vpermd reads the index's low 4 bits, so no masking), weighted 2^t per plane and summed: the symmetrized code
 * q' = 2q - (2^b - 1); the integer zero point z' = 2z + 1 - 2^b is subtracted there too, so a tile's bytes are
 * w8 = q' - z' = 2 (q - z) and y = sum_groups a * s/2 * (xq . w8). One group of a 64-row tile is unpacked into
 * four 16-row B tiles ([run][16 rows x 4 k] bytes: the tile unit's layout), read from L1 by every row block.
 * |q' - z'| must fit int8: codegen/cpu/kernel.py picks these kernels only for weights where it does.
 *
 * Where the time goes (4096 x 4096, 128 rows, W2, one thread, ~2.7 ms): the tile unit's part (loads, 8
 * multiply-adds per 32 x 32 block and group, stores) ~1.2 ms, the vector part (unpack ~0.3 ms, epilogue ~1.1
 * ms) ~1.4 ms; the two do not overlap (a tile load waits for the epilogue's stores to drain). Keeping four B tiles
 * in registers across row blocks, or unpacking the next group between the multiply-adds, measured no faster. */
#define _GNU_SOURCE /* syscall() under -std=c11 */
#include "lut_int8_common.h"
#include <sys/syscall.h>
#include <stdlib.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} tile_config;

/* Linux hands AMX's tile state to a process only after it asks (once, for every thread of the process). */
static int amx_permitted(void) {
  static int state; /* 0: not asked yet, 1: granted, -1: refused */
  int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
  if (!s) {
    s = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 ? 1 : -1;
    __atomic_store_n(&state, s, __ATOMIC_RELEASE);
  }
  return s > 0;
}

int32_t SYM(lutc_amx_available)(void) { return amx_permitted(); }

/* Row `row` of x (k floats) -> its int8 activations (zero past k) and scales per group. The activations are
 * stored by group, [groups][rows rounded up to 16][group]: a group's rows are contiguous, so the 16-row tile
 * loads do not all fall into one L1 set (a row stride of k_pad bytes, a multiple of 4 KiB, would). The last row
 * (m - 1) also zeroes the padding rows, which the tile loads read. */
int32_t SYM(lutc_int8_quantize)(const float* x, int64_t k, int64_t k_pad, int64_t group, int8_t* xq, int64_t row,
                               int64_t m, float* ascale, float* xsum) {
  if (group % 16 || k_pad % group || row < 0 || row >= m) return -1;
  const int64_t m16 = (m + 15) & ~(int64_t)15;
  for (int64_t g = 0; g * group < k_pad; ++g) {
    int8_t* out = xq + (g * m16 + row) * group;
    const int64_t lo = g * group, hi = lo + group < k ? lo + group : k;
    __m512 amax = _mm512_setzero_ps();
    for (int64_t i = lo; i < hi; i += 16) {
      const __mmask16 mk = hi - i >= 16 ? 0xFFFF : (__mmask16)((1u << (hi - i)) - 1);
      amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_maskz_loadu_ps(mk, x + i)));
    }
    float a = _mm512_reduce_max_ps(amax) / 127.0f;
    if (!(a > 0.0f)) a = 1.0f;
    const __m512 inv = _mm512_set1_ps(1.0f / a);
    __m512i qsum = _mm512_setzero_si512();
    for (int64_t i = lo; i < lo + group; i += 16) {
      const int64_t left = hi - i;
      const __mmask16 mk = left >= 16 ? 0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
      const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, x + i), inv));
      qsum = _mm512_add_epi32(qsum, q);
      _mm_storeu_si128((__m128i*)(out + i - lo), _mm512_cvtsepi32_epi8(q)); /* |q| <= 127 up to rounding */
    }
    ascale[g] = a;
    xsum[g] = a * (float)_mm512_reduce_add_epi32(qsum); /* what the int8 products see: lutc_offsets reads it */
    if (row == m - 1) memset(out + group, 0, (size_t)((m16 - m) * group));
  }
  return 0;
}

/* acc[rows][32 columns] += a[row] * s/2[column] * C: the int32 sums of one group of a row block (cb: 2 x 2 C tiles,
 * rows 0-15 | 16-31, columns 0-15 | 16-31). Deferring it until the tile unit works on the next block (software
 * pipelining) gained nothing measurable: the tile loads wait for these stores to drain. */
static inline void epilogue(const int32_t* cb, int64_t nrows, const float* a, int64_t groups, __m512 s0, __m512 s1,
                            float* acc) {
  for (int64_t i = 0; i < nrows; ++i) {
    const __m512 ai = _mm512_set1_ps(a[i * groups]);
    const int32_t* ci = cb + (i >> 4) * 512 + (i & 15) * 16;
    float* yi = acc + i * 64;
    const __m512 v0 = _mm512_cvtepi32_ps(_mm512_load_si512((const void*)ci));
    const __m512 v1 = _mm512_cvtepi32_ps(_mm512_load_si512((const void*)(ci + 256)));
    _mm512_store_ps(yi, _mm512_fmadd_ps(v0, _mm512_mul_ps(ai, s0), _mm512_load_ps(yi)));
    _mm512_store_ps(yi + 16, _mm512_fmadd_ps(v1, _mm512_mul_ps(ai, s1), _mm512_load_ps(yi + 16)));
  }
}

/* The lookup entry point's signature (LUTC_GEMV in lut_common.h), so the TVM driver calls either the same way:
 * `tables` are the quantized activations, `tscale` their scales; xsum, `rows` and `tiles` are unused; row0 is a multiple of 16
 * and mblock (rows per block, rounded up to 16; 0: all) bounds the activations one weight unpack serves. A tile's
 * results accumulate in a contiguous buffer (rows of y are n_pad floats apart, which maps them to few L1 sets). */
int32_t SYM(lutc_amx_gemm)(const int8_t* xq, const float* ascale, const float* xsum, const uint8_t* w,
                           const uint16_t* s, const int8_t* z, float* y, int64_t m, int64_t n_pad, int64_t runs,
                           int64_t groups, int64_t bits, int64_t tile0, int64_t tile1, int64_t row0, int64_t row1,
                           int64_t rows, int64_t mblock, int64_t tiles) {
  (void)xsum, (void)rows, (void)tiles;
  const int64_t rpg = runs / groups, gs = 4 * rpg, m16 = (m + 15) & ~(int64_t)15;
  const int ks = gs % 64 == 0 ? 64 : gs % 32 == 0 ? 32 : 16;
  if (runs % groups || gs % 16 || rpg > MAX_RPG || row0 < 0 || row1 > m || bits < 1 || bits > 4) return -1;
  /* Before the alignment check: a row split over more tasks than 16-row blocks leaves the last tasks the empty
   * range [m, m), whose start is no multiple of 16. */
  if (row0 >= row1 || tile0 >= tile1) return 0;
  if (row0 % 16) return -1;
  const int64_t mb = mblock > 0 ? (mblock + 15) & ~(int64_t)15 : row1 - row0;
  float* acc = aligned_alloc(64, (size_t)(mb + 16) * 64 * sizeof(float));
  if (!acc || !amx_permitted()) {
    free(acc);
    return -1;
  }
  tile_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 4; ++t) cfg.rows[t] = 16, cfg.colsb[t] = 64;     /* C: 16 rows x 16 int32 */
  for (int t = 4; t < 6; ++t) cfg.rows[t] = 16, cfg.colsb[t] = ks;     /* A: 16 rows x ks int8 */
  for (int t = 6; t < 8; ++t) cfg.rows[t] = ks / 4, cfg.colsb[t] = 64; /* B: ks/4 runs x 16 rows x 4 */
  _tile_loadconfig(&cfg);
  __m512i e[4];
  plane_tables(e);
  int8_t bt[4 * MAX_RPG * 64] __attribute__((aligned(64)));
  int32_t cb[1024] __attribute__((aligned(64)));
  for (int64_t b0 = row0; b0 < row1; b0 += mb) {
    const int64_t b1 = b0 + mb < row1 ? b0 + mb : row1;
    for (int64_t t = tile0; t < tile1; ++t) {
      memset(acc, 0, (size_t)(b1 - b0) * 64 * sizeof(float));
      for (int64_t g = 0; g < groups; ++g) {
        unpack_group(w + t * tile_bytes(runs, bits), runs, bits, g * rpg, z + (t * groups + g) * 64, rpg, e, bt);
        __m512 sf[4];
        half_scales(s + (t * groups + g) * 64, sf);
        for (int64_t r = b0; r < b1; r += 32) {
          const int64_t nr = b1 - r < 32 ? b1 - r : 32;
          const int8_t* xr = xq + (g * m16 + r) * gs;
          for (int h = 0; h < 2; ++h) {
            const int8_t *b_0 = bt + (2 * h) * rpg * 64, *b_1 = bt + (2 * h + 1) * rpg * 64;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t kk = 0; kk < gs; kk += ks) {
              _tile_loadd(4, xr + kk, gs);
              _tile_loadd(6, b_0 + kk * 16, 64);
              _tile_loadd(7, b_1 + kk * 16, 64);
              _tile_dpbssd(0, 4, 6);
              _tile_dpbssd(1, 4, 7);
              if (nr > 16) {
                _tile_loadd(5, xr + 16 * gs + kk, gs);
                _tile_dpbssd(2, 5, 6);
                _tile_dpbssd(3, 5, 7);
              }
            }
            _tile_stored(0, cb, 64);
            _tile_stored(1, cb + 256, 64);
            if (nr > 16) {
              _tile_stored(2, cb + 512, 64);
              _tile_stored(3, cb + 768, 64);
            }
            epilogue(cb, nr, ascale + r * groups + g, groups, sf[2 * h], sf[2 * h + 1], acc + (r - b0) * 64 + 32 * h);
          }
        }
      }
      for (int64_t r = b0; r < b1; ++r) memcpy(y + r * n_pad + t * 64, acc + (r - b0) * 64, 64 * sizeof(float));
    }
  }
  _tile_release();
  free(acc);
  return 0;
}
