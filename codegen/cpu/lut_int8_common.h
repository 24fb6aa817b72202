/* Shared by the kernels that multiply int8 weights with int8 activations (lut_amx_kernels.c: AMX tiles,
 * lut_vnni_kernels.c: AVX-512 VNNI): the weights of layout "x86-g4-n64-v2" unpacked group by group into int8, in
 * the tile unit's B layout ([run][16 rows x 4 k] bytes), which is also one vpdpbusd operand per run and 16 rows.
 * AVX-512 only. */
#ifndef LUTC_INT8_COMMON_H
#define LUTC_INT8_COMMON_H
#include "lut_common.h"

/* sf[c] = s/2 of the 16 rows 16c..16c+15 of one tile and group (f16 scales) */
static inline void half_scales(const uint16_t* sg, __m512 sf[4]) {
  for (int c = 0; c < 4; ++c)
    sf[c] = _mm512_mul_ps(_mm512_set1_ps(0.5f), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(sg + 16 * c))));
}

/* e[t]: plane index (4 bits: 4 consecutive k) -> 4 bytes of +-2^t, for vpermd */
static inline void plane_tables(__m512i e[4]) {
  int32_t tab[4][16] __attribute__((aligned(64)));
  for (int t = 0; t < 4; ++t)
    for (int v = 0; v < 16; ++v) {
      uint32_t d = 0;
      for (int b = 0; b < 4; ++b) d |= (uint32_t)(uint8_t)(int8_t)(((v >> b) & 1 ? 1 : -1) * (1 << t)) << (8 * b);
      tab[t][v] = (int32_t)d;
    }
  for (int t = 0; t < 4; ++t) e[t] = _mm512_load_si512(tab[t]);
}

/* Runs j0..j0+rpg of one 64-row tile (wt) -> four 16-row B tiles (bt[c]: rows 16c..16c+15, [run][16 rows x 4
 * bytes]). Full line (run j, pair p), as 32 words: word i = plane 2p's nibbles of rows i (bits 0-3) and i+32
 * (4-7), plane 2p+1's at bits 8-11 and 12-15; a half line (an odd width's last plane), as 32 bytes: byte i = the
 * plane's nibbles of rows i and i+32, widened to the same dword positions. */
static inline void unpack_group(const uint8_t* wt, int64_t runs, int64_t bits, int64_t j0, const int8_t* zg,
                                int64_t rpg, const __m512i e[4], int8_t* bt) {
  const int P = (int)((bits + 1) / 2), PF = (int)(bits / 2), last_plane_zero = (int)(bits & 1);
  const uint8_t* wh = half_lines(wt, runs, bits);
  __m512i zr[4];
  const __m512i dup = _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0); /* pshufb: byte 4i of each dword */
  for (int c = 0; c < 4; ++c) /* z' of each row in all 4 bytes of its dword */
    zr[c] = _mm512_shuffle_epi8(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(zg + 16 * c))), dup);
  for (int64_t r = 0; r < rpg; ++r) {
    __m512i q[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
    for (int p = 0; p < P; ++p) {
      __m512i lo, hi;
      if (p < PF) {
        const uint8_t* line = wt + ((j0 + r) * PF + p) * 64;
        lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)line));
        hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(line + 32)));
      } else {
        const uint8_t* line = wh + (j0 + r) * 32;
        lo = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)line));
        hi = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(line + 16)));
      }
      const __m512i ea = e[2 * p], eb = e[2 * p + 1];
      q[0] = _mm512_add_epi8(q[0], _mm512_permutexvar_epi32(lo, ea));
      q[1] = _mm512_add_epi8(q[1], _mm512_permutexvar_epi32(hi, ea));
      q[2] = _mm512_add_epi8(q[2], _mm512_permutexvar_epi32(_mm512_srli_epi32(lo, 4), ea));
      q[3] = _mm512_add_epi8(q[3], _mm512_permutexvar_epi32(_mm512_srli_epi32(hi, 4), ea));
      if (p == P - 1 && last_plane_zero) continue; /* odd widths: the last pair's second plane weighs 0 */
      q[0] = _mm512_add_epi8(q[0], _mm512_permutexvar_epi32(_mm512_srli_epi32(lo, 8), eb));
      q[1] = _mm512_add_epi8(q[1], _mm512_permutexvar_epi32(_mm512_srli_epi32(hi, 8), eb));
      q[2] = _mm512_add_epi8(q[2], _mm512_permutexvar_epi32(_mm512_srli_epi32(lo, 12), eb));
      q[3] = _mm512_add_epi8(q[3], _mm512_permutexvar_epi32(_mm512_srli_epi32(hi, 12), eb));
    }
    for (int c = 0; c < 4; ++c) _mm512_store_si512((void*)(bt + (c * rpg + r) * 64), _mm512_sub_epi8(q[c], zr[c]));
  }
}

#endif
