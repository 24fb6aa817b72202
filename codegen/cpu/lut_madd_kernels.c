/* Many-row LUT matmuls for AVX2 hosts (AMD Zen 2/3, Intel Haswell to the client cores without AVX-512): the
 * weights of layout "x86-g4-n64-v2" unpacked group by group into their codes q (unsigned bytes), multiplied with
 * int8 activations by vpmaddubsw (32 multiply-adds per instruction: unsigned codes x signed activations, pairs
 * summed into int16), in place of the lookups' one vpshufb per 32 weights, row and plane. The int16 sums are added
 * for as many runs as cannot overflow (|sum| <= 2 (2^b - 1) 127 per step: W1 129 steps, W2 43, W3 18, W4 8) and
 * only then widened by vpmaddwd, so the inner loop is one vpmaddubsw and one vpaddw per 32 weights and row.
 *
 * Numerics: those of the AMX and VNNI kernels (lut_amx_kernels.c), whose int32 sums are sum_k xq 2 (q - z); here
 * sum_k xq q comes off the tiles and the zero point through the group sums, y = sum_g a s (xq . q) - s z (a sum xq),
 * with xsum = a sum xq from the quantizer, so the result agrees with theirs to float rounding.
 *
 * Activations: lutc_int8_quantize (as lut_amx_kernels.c's: one scale per row and K group, stored by group). Compiled
 * for the AVX2 variant only; the Python side picks this kernel for AVX2 libraries. */
#include "lut_common.h"
#include <stdlib.h>

/* int8 activations of row `row`: lut_amx_kernels.c's lutc_int8_quantize in 8-wide vectors (the same rounding:
 * cvtps rounds to nearest even) */
int32_t SYM(lutc_int8_quantize)(const float* x, int64_t k, int64_t k_pad, int64_t group, int8_t* xq, int64_t row,
                                int64_t m, float* ascale, float* xsum) {
  if (group % 16 || k_pad % group || row < 0 || row >= m) return -1;
  const int64_t m16 = (m + 15) & ~(int64_t)15;
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 sign = _mm256_set1_ps(-0.0f);
#define TAIL(left) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)((left) < 8 ? ((left) > 0 ? (left) : 0) : 8)), iota)
  for (int64_t g = 0; g * group < k_pad; ++g) {
    int8_t* out = xq + (g * m16 + row) * group;
    const int64_t lo = g * group, hi = lo + group < k ? lo + group : k;
    __m256 amax = _mm256_setzero_ps();
    for (int64_t i = lo; i < hi; i += 8)
      amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, _mm256_maskload_ps(x + i, TAIL(hi - i))));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    float a = _mm_cvtss_f32(_mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1))) / 127.0f;
    if (!(a > 0.0f)) a = 1.0f;
    const __m256 inv = _mm256_set1_ps(1.0f / a);
    __m256i qsum = _mm256_setzero_si256();
    for (int64_t i = lo; i < lo + group; i += 16) {
      const __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_maskload_ps(x + i, TAIL(hi - i)), inv));
      const __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_maskload_ps(x + i + 8, TAIL(hi - i - 8)), inv));
      qsum = _mm256_add_epi32(qsum, _mm256_add_epi32(q0, q1));
      const __m256i p16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8); /* 16 int16 in order */
      _mm_storeu_si128((__m128i*)(out + i - lo),
                       _mm_packs_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1)));
    }
#undef TAIL
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(qsum), _mm256_extracti128_si256(qsum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    ascale[g] = a;
    xsum[g] = a * (float)_mm_cvtsi128_si32(s4);
    if (row == m - 1) memset(out + group, 0, (size_t)((m16 - m) * group));
  }
  return 0;
}

/* lo[t] / hi[t]: plane index (4 bits: 4 consecutive k) -> 4 bytes of 2^t or 0, entries 0-7 / 8-15 (vpermd has 8) */
static inline void code_tables(__m256i lo[4], __m256i hi[4]) {
  int32_t tab[16];
  for (int t = 0; t < 4; ++t) {
    for (int v = 0; v < 16; ++v) {
      uint32_t d = 0;
      for (int b = 0; b < 4; ++b) d |= (uint32_t)(((v >> b) & 1) << t) << (8 * b);
      tab[v] = (int32_t)d;
    }
    lo[t] = _mm256_loadu_si256((const __m256i*)tab), hi[t] = _mm256_loadu_si256((const __m256i*)(tab + 8));
  }
}

/* the 4 code bytes of plane t for the 8 rows whose index sits at bit `sh` of each dword of d */
static inline __m256i plane_bytes(const __m256i d, const int sh, const __m256i lo, const __m256i hi) {
  const __m256i i = _mm256_srli_epi32(d, sh);
  const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(d, 28 - sh)); /* index bit 3 -> the sign bit */
  return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(_mm256_permutevar8x32_epi32(lo, i)),
                                              _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(hi, i)), bit3));
}

/* Runs j0..j0+rpg of one 64-row tile (wt) -> the codes q, bt[h][run][8 rows x 4 k] for the 8-row chunks h (rows
 * 8h..8h+7). A full line (run j, pair p) is 32 words: word i = plane 2p's nibbles of rows i (bits 0-3) and i+32
 * (4-7), plane 2p+1's at bits 8-11 and 12-15; a half line (an odd width's last plane) 32 bytes: byte i = the plane's
 * nibbles of rows i and i+32. */
static inline void unpack_codes(const uint8_t* wt, int64_t runs, int64_t bits, int64_t j0, int64_t rpg,
                                const __m256i lo[4], const __m256i hi[4], uint8_t* bt) {
  const int P = (int)((bits + 1) / 2), PF = (int)(bits / 2), last_plane_zero = (int)(bits & 1);
  const uint8_t* wh = half_lines(wt, runs, bits);
  for (int64_t r = 0; r < rpg; ++r) {
    __m256i q[8];
    for (int h = 0; h < 8; ++h) q[h] = _mm256_setzero_si256();
    for (int p = 0; p < P; ++p)
      for (int c = 0; c < 4; ++c) { /* rows 8c..8c+7 (low nibbles) and 32 + 8c.. (high) */
        __m256i d;
        if (p < PF)
          d = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(wt + ((j0 + r) * PF + p) * 64 + 16 * c)));
        else
          d = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(wh + (j0 + r) * 32 + 8 * c)));
        q[c] = _mm256_add_epi8(q[c], plane_bytes(d, 0, lo[2 * p], hi[2 * p]));
        q[c + 4] = _mm256_add_epi8(q[c + 4], plane_bytes(d, 4, lo[2 * p], hi[2 * p]));
        if (p == P - 1 && last_plane_zero) continue; /* odd widths: the last pair's second plane weighs 0 */
        q[c] = _mm256_add_epi8(q[c], plane_bytes(d, 8, lo[2 * p + 1], hi[2 * p + 1]));
        q[c + 4] = _mm256_add_epi8(q[c + 4], plane_bytes(d, 12, lo[2 * p + 1], hi[2 * p + 1]));
      }
    for (int h = 0; h < 8; ++h) _mm256_store_si256((__m256i*)(bt + (h * rpg + r) * 32), q[h]);
  }
}

/* Two rows' int16 sums over runs j0..j1 of 4 chunks of codes (chunk c at b + c st): per run, both rows' 4
 * activation bytes broadcast, 4 code vectors loaded, 8 vpmaddubsw and 8 vpaddw. In assembly: from the intrinsics
 * gcc 12 made 40 instructions per run (register copies of every sum, codes loaded twice, a spill), at -O2 and -O3
 * alike, and the loop ran at the front end's 6 per cycle, ~1 vpmaddubsw per cycle; this one has 25. */
/* one chunk of one run: the code vector at SRC times both rows' broadcast activations, into sums A0 (row 0), A1 */
#define MADD2_CHUNK(SRC, A0, A1)                                                                          \
  "vmovdqa " SRC ", %%ymm12\n\t"                                                                         \
  "vpmaddubsw %%ymm14, %%ymm12, %%ymm13\n\t"                                                             \
  "vpmaddubsw %%ymm15, %%ymm12, %%ymm12\n\t"                                                             \
  "vpaddw %%ymm13, %[" A0 "], %[" A0 "]\n\t"                                                             \
  "vpaddw %%ymm12, %[" A1 "], %[" A1 "]\n\t"
#define MADD2_ASM(X_, GS_, B_, ST_, N_)                                                                   \
  do {                                                                                                   \
    const uint8_t* bb_ = (B_);                                                                           \
    const uint8_t* b2_ = bb_ + 2 * (ST_);                                                                \
    const int8_t* xx_ = (X_);                                                                            \
    int64_t n_ = (N_), gs_ = (GS_), st_ = (ST_);                                                         \
    __asm__ volatile("1:\n\t"                                                                            \
                     "vpbroadcastd (%[xp]), %%ymm14\n\t"                                                 \
                     "vpbroadcastd (%[xp],%[gs]), %%ymm15\n\t"                                           \
                     MADD2_CHUNK("(%[bp])", "a00", "a10") MADD2_CHUNK("(%[bp],%[st])", "a01", "a11")     \
                     MADD2_CHUNK("(%[b2])", "a02", "a12") MADD2_CHUNK("(%[b2],%[st])", "a03", "a13")     \
                     "add $4, %[xp]\n\t"                                                                 \
                     "add $32, %[bp]\n\t"                                                                \
                     "add $32, %[b2]\n\t"                                                                \
                     "dec %[n]\n\t"                                                                      \
                     "jnz 1b\n\t"                                                                        \
                     : [a00] "+x"(a00), [a01] "+x"(a01), [a02] "+x"(a02), [a03] "+x"(a03), [a10] "+x"(a10), \
                       [a11] "+x"(a11), [a12] "+x"(a12), [a13] "+x"(a13), [xp] "+r"(xx_), [bp] "+r"(bb_),  \
                       [b2] "+r"(b2_), [n] "+r"(n_)                                                      \
                     : [gs] "r"(gs_), [st] "r"(st_)                                                      \
                     : "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");                             \
  } while (0)

/* the int16 sums of a segment, widened, into the int32 sums c[r][h] (in memory: the loop needs the registers) */
#define WIDEN(i, h) _mm256_store_si256((__m256i*)c[i][h], _mm256_add_epi32(first ? zero : _mm256_load_si256((const __m256i*)c[i][h]), \
                                       _mm256_madd_epi16(a##i##h, ones))), a##i##h = zero;

/* acc[r][8h..] += a[r] s (sum_k xq q) - s z xsum[r] for R (1 or 2) rows and the 4 chunks h0.. of one group; xr:
 * their activations (gs bytes per row), bt the group's codes, sv / szv: s and s z per chunk (8 floats each). */
static inline __attribute__((always_inline)) void madd_rows(const int8_t* xr, int64_t gs, const uint8_t* bt,
                                                          int64_t rpg, int64_t steps, int h0, const float* sv,
                                                          const float* szv, const float* a, const float* xs,
                                                          int64_t groups, float* acc, const int R) {
  const __m256i zero = _mm256_setzero_si256(), ones = _mm256_set1_epi16(1);
  __m256i a00 = zero, a01 = zero, a02 = zero, a03 = zero, a10 = zero, a11 = zero, a12 = zero, a13 = zero;
  int32_t c[2][4][8] __attribute__((aligned(32)));
  const uint8_t* bh = bt + (int64_t)h0 * rpg * 32;
  for (int64_t j0 = 0; j0 < rpg; j0 += steps) {
    const int64_t j1 = j0 + steps < rpg ? j0 + steps : rpg;
    const int first = j0 == 0;
    if (R == 2) {
      MADD2_ASM(xr + 4 * j0, gs, bh + j0 * 32, rpg * 32, j1 - j0);
    } else {
      for (int64_t j = j0; j < j1; ++j) {
        int32_t x4;
        memcpy(&x4, xr + 4 * j, 4);
        const __m256i xa = _mm256_set1_epi32(x4);
        a00 = _mm256_add_epi16(a00, _mm256_maddubs_epi16(_mm256_load_si256((const __m256i*)(bh + j * 32)), xa));
        a01 = _mm256_add_epi16(a01, _mm256_maddubs_epi16(_mm256_load_si256((const __m256i*)(bh + (rpg + j) * 32)), xa));
        a02 = _mm256_add_epi16(a02, _mm256_maddubs_epi16(_mm256_load_si256((const __m256i*)(bh + (2 * rpg + j) * 32)), xa));
        a03 = _mm256_add_epi16(a03, _mm256_maddubs_epi16(_mm256_load_si256((const __m256i*)(bh + (3 * rpg + j) * 32)), xa));
      }
    }
    WIDEN(0, 0) WIDEN(0, 1) WIDEN(0, 2) WIDEN(0, 3)
    if (R > 1) { WIDEN(1, 0) WIDEN(1, 1) WIDEN(1, 2) WIDEN(1, 3) }
  }
  for (int r = 0; r < R; ++r) {
    const __m256 ar = _mm256_set1_ps(a[r * groups]), xsr = _mm256_set1_ps(xs[r * groups]);
    for (int h = 0; h < 4; ++h) {
      float* o = acc + r * 64 + 8 * (h0 + h);
      const __m256 v = _mm256_cvtepi32_ps(_mm256_load_si256((const __m256i*)c[r][h]));
      const __m256 t = _mm256_fmadd_ps(v, _mm256_mul_ps(ar, _mm256_load_ps(sv + 8 * (h0 + h))), _mm256_load_ps(o));
      _mm256_store_ps(o, _mm256_fnmadd_ps(_mm256_load_ps(szv + 8 * (h0 + h)), xsr, t));
    }
  }
}
#undef MADD2_ASM
#undef MADD2_CHUNK
#undef WIDEN

/* The AMX kernel's entry point and conventions (lutc_amx_gemm); xsum = a sum xq per row and group. */
int32_t SYM(lutc_madd_gemm)(const int8_t* xq, const float* ascale, const float* xsum, const uint8_t* w,
                            const uint16_t* s, const int8_t* z, float* y, int64_t m, int64_t n_pad, int64_t runs,
                            int64_t groups, int64_t bits, int64_t tile0, int64_t tile1, int64_t row0, int64_t row1,
                            int64_t rows, int64_t mblock, int64_t tiles) {
  (void)rows, (void)tiles;
  const int64_t rpg = runs / groups, gs = 4 * rpg, m16 = (m + 15) & ~(int64_t)15;
  if (runs % groups || gs % 16 || rpg > MAX_RPG || row0 < 0 || row1 > m || bits < 1 || bits > 4) return -1;
  if (row0 >= row1 || tile0 >= tile1) return 0;
  const int64_t top = (1 << bits) - 1, steps = 32767 / (2 * top * 127); /* int16 sums that cannot overflow */
  const int64_t mb = mblock > 0 ? mblock : row1 - row0;
  float* acc = aligned_alloc(32, (size_t)mb * 64 * sizeof(float));
  uint8_t* bt = aligned_alloc(32, 8 * MAX_RPG * 32);
  if (!acc || !bt) {
    free(acc), free(bt);
    return -1;
  }
  __m256i lo[4], hi[4];
  code_tables(lo, hi);
  float sv[64] __attribute__((aligned(32))), szv[64] __attribute__((aligned(32)));
  for (int64_t b0 = row0; b0 < row1; b0 += mb) {
    const int64_t b1 = b0 + mb < row1 ? b0 + mb : row1;
    for (int64_t t = tile0; t < tile1; ++t) {
      memset(acc, 0, (size_t)(b1 - b0) * 64 * sizeof(float));
      for (int64_t g = 0; g < groups; ++g) {
        unpack_codes(w + t * tile_bytes(runs, bits), runs, bits, g * rpg, rpg, lo, hi, bt);
        const uint16_t* sg = s + (t * groups + g) * 64;
        const int8_t* zg = z + (t * groups + g) * 64;
        for (int i = 0; i < 64; i += 8) { /* s, and s z = s/2 (z' + 2^b - 1) */
          const __m256 sf = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(sg + i)));
          const __m256 zz = _mm256_cvtepi32_ps(_mm256_add_epi32(
              _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(zg + i))), _mm256_set1_epi32((int)top)));
          _mm256_store_ps(sv + i, sf), _mm256_store_ps(szv + i, _mm256_mul_ps(_mm256_mul_ps(sf, zz), _mm256_set1_ps(0.5f)));
        }
        for (int64_t r = b0; r < b1; r += 2) {
          const int8_t* xr = xq + (g * m16 + r) * gs;
          const float* ar = ascale + r * groups + g;
          const float* xr_s = xsum + r * groups + g;
          float* ac = acc + (r - b0) * 64;
          for (int h0 = 0; h0 < 8; h0 += 4) {
            if (b1 - r >= 2)
              madd_rows(xr, gs, bt, rpg, steps, h0, sv, szv, ar, xr_s, groups, ac, 2);
            else
              madd_rows(xr, gs, bt, rpg, steps, h0, sv, szv, ar, xr_s, groups, ac, 1);
          }
        }
      }
      for (int64_t r = b0; r < b1; ++r) memcpy(y + r * n_pad + t * 64, acc + (r - b0) * 64, 64 * sizeof(float));
    }
  }
  free(acc), free(bt);
  return 0;
}
