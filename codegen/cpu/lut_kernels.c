/* LUT micro-kernels for x86 (AVX-512BW, AVX2), aarch64 (NEON) and a portable fallback, one source compiled once per
 * ISA with LUTC_ISA set to 512, 256, 128 (NEON) or 0; every symbol carries the ISA suffix. TVM-generated code drives them: it
 * loops over rows and splits the N tiles over its thread pool (codegen/cpu/build.py).
 *
 * Tables (lutc_precompute): for each run of 4 activations, the 16 signed sums T[i] = sum_b (+-x_b) with
 * bit b of i choosing the sign; the 8 entries with i < 8 are computed, the rest mirrored (T[15-i] = -T[i]).
 * int8 with one scale per K group; xsum per group is read back from the quantized tables (-T[0]), so the
 * zero-point term rounds like the lookups do.
 *
 * Weights (layout "x86-g4-n64-v2", lut_common.h): tiles of 64 rows; per tile, per run j, per pair p of bit
 * planes, 64 bytes: byte 2i+q holds plane 2p+q's 4-bit index of row i (low nibble) and row i+32 (high nibble);
 * an odd width's last plane comes from a 32-byte half line, widened to the same byte order (its partner reads 0).
 * One vpshufb looks up 64 indices; vpmaddubsw with (1, 2) adds the two planes of a row and widens to int16.
 * Scales (f16) and zero points (int8, z' = 2z + 1 - 2^b) per tile, group and row: [tiles][G][64].
 */
#include "lut_common.h"

/* Vectors of VW floats for the table builder; the generic build uses VW = 1. Rounding is to nearest even, as
 * numpy's (the reference) is, so both produce the same int8 tables. */
#if LUTC_ISA == 512
#define VW 16
typedef __m512 vf;
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps(p, v)
#define VADD(a, b) _mm512_add_ps(a, b)
#define VMUL(a, b) _mm512_mul_ps(a, b)
#define VSUB(a, b) _mm512_sub_ps(a, b)
#define VNEG(a) _mm512_sub_ps(_mm512_setzero_ps(), a)
#define VMAX(a, b) _mm512_max_ps(a, b)
#define VABS(a) _mm512_abs_ps(a)
#define VDIV(a, b) _mm512_div_ps(a, b)
#define VSET(x) _mm512_set1_ps(x)
#define VROUND(a) _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
static inline float vhmax(vf a) { return _mm512_reduce_max_ps(a); }
static inline float vhsum(vf a) { return _mm512_reduce_add_ps(a); }
#elif LUTC_ISA == 256
#define VW 8
typedef __m256 vf;
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps(p, v)
#define VADD(a, b) _mm256_add_ps(a, b)
#define VMUL(a, b) _mm256_mul_ps(a, b)
#define VSUB(a, b) _mm256_sub_ps(a, b)
#define VNEG(a) _mm256_sub_ps(_mm256_setzero_ps(), a)
#define VMAX(a, b) _mm256_max_ps(a, b)
#define VABS(a) _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a)
#define VDIV(a, b) _mm256_div_ps(a, b)
#define VSET(x) _mm256_set1_ps(x)
#define VROUND(a) _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
static inline float vhmax(vf a) {
  float t[8], m = 0.0f;
  _mm256_storeu_ps(t, a);
  for (int i = 0; i < 8; ++i) m = fmaxf(m, t[i]);
  return m;
}
static inline float vhsum(vf a) {
  float t[8], s = 0.0f;
  _mm256_storeu_ps(t, a);
  for (int i = 0; i < 8; ++i) s += t[i];
  return s;
}
#elif LUTC_ISA == 128
#define VW 4
typedef float32x4_t vf;
#define VLOAD(p) vld1q_f32(p)
#define VSTORE(p, v) vst1q_f32(p, v)
#define VADD(a, b) vaddq_f32(a, b)
#define VMUL(a, b) vmulq_f32(a, b)
#define VSUB(a, b) vsubq_f32(a, b)
#define VNEG(a) vnegq_f32(a)
#define VMAX(a, b) vmaxq_f32(a, b)
#define VABS(a) vabsq_f32(a)
#define VDIV(a, b) vdivq_f32(a, b)
#define VSET(x) vdupq_n_f32(x)
#define VROUND(a) vrndnq_f32(a)
static inline float vhmax(vf a) { return vmaxvq_f32(a); }
static inline float vhsum(vf a) { return vaddvq_f32(a); }
#else
#define VW 1
typedef float vf;
#define VLOAD(p) (*(p))
#define VSTORE(p, v) (*(p) = (v))
#define VADD(a, b) ((a) + (b))
#define VMUL(a, b) ((a) * (b))
#define VSUB(a, b) ((a) - (b))
#define VNEG(a) (-(a))
#define VMAX(a, b) fmaxf(a, b)
#define VABS(a) fabsf(a)
#define VDIV(a, b) ((a) / (b))
#define VSET(x) (x)
#define VROUND(a) nearbyintf(a)
static inline float vhmax(vf a) { return a; }
static inline float vhsum(vf a) { return a; }
#endif

#define MAX_RUNS 256 /* runs per group: group <= 1024 */

#if LUTC_ISA == 512
/* 8 entries x 16 runs of quantized floats -> 16 table rows [e0..e7, -e7..-e0], by an unpack transpose. */
static inline void store_tables16(float t[8][MAX_RUNS + VW], int64_t r, int8_t* out, double* isum) {
  __m128i b[8];
  for (int i = 0; i < 8; ++i) b[i] = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_loadu_ps(&t[i][r])));
  *isum -= _mm512_reduce_add_ps(_mm512_loadu_ps(&t[0][r]));
  const __m128i u0 = _mm_unpacklo_epi8(b[0], b[1]), u1 = _mm_unpackhi_epi8(b[0], b[1]);
  const __m128i u2 = _mm_unpacklo_epi8(b[2], b[3]), u3 = _mm_unpackhi_epi8(b[2], b[3]);
  const __m128i u4 = _mm_unpacklo_epi8(b[4], b[5]), u5 = _mm_unpackhi_epi8(b[4], b[5]);
  const __m128i u6 = _mm_unpacklo_epi8(b[6], b[7]), u7 = _mm_unpackhi_epi8(b[6], b[7]);
  const __m128i v[4] = {_mm_unpacklo_epi16(u0, u2), _mm_unpackhi_epi16(u0, u2), _mm_unpacklo_epi16(u1, u3),
                        _mm_unpackhi_epi16(u1, u3)};
  const __m128i w[4] = {_mm_unpacklo_epi16(u4, u6), _mm_unpackhi_epi16(u4, u6), _mm_unpacklo_epi16(u5, u7),
                        _mm_unpackhi_epi16(u5, u7)};
  const __m128i rev = _mm_setr_epi8(7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8);
  for (int q = 0; q < 4; ++q) {  /* v[q], w[q]: runs 4q..4q+3, entries 0-3 and 4-7 */
    const __m128i z[2] = {_mm_unpacklo_epi32(v[q], w[q]), _mm_unpackhi_epi32(v[q], w[q])};
    for (int h = 0; h < 2; ++h) {  /* z[h]: runs 4q+2h and 4q+2h+1, 8 entries each */
      const __m128i neg = _mm_shuffle_epi8(_mm_sub_epi8(_mm_setzero_si128(), z[h]), rev);
      _mm_storeu_si128((__m128i*)(out + (4 * q + 2 * h) * 16), _mm_unpacklo_epi64(z[h], neg));
      _mm_storeu_si128((__m128i*)(out + (4 * q + 2 * h + 1) * 16), _mm_unpackhi_epi64(z[h], neg));
    }
  }
}
#endif

#if LUTC_ISA == 512
/* xs[b][r + j] = x[4j + b] for the 16 runs at x, of which only the first `valid` floats are read (masked loads: a
 * group of fewer than 16 runs must not read past x). Two permute stages; gathers were 1.5x slower per table build
 * (AMD Zen 5: 1.58 -> 1.07 us per 1536-wide row). */
static inline void deinterleave16(const float* x, int64_t valid, float xs[4][MAX_RUNS + VW], int64_t r) {
  const __m512i p01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
  const __m512i p23 = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31);
  __m512 a[4];
  for (int i = 0; i < 4; ++i) {
    const int64_t c = valid - 16 * i;
    a[i] = _mm512_maskz_loadu_ps((__mmask16)(c >= 16 ? 0xFFFF : c <= 0 ? 0 : (1u << c) - 1), x + 16 * i);
  }
  const __m512 lo01 = _mm512_permutex2var_ps(a[0], p01, a[1]), lo23 = _mm512_permutex2var_ps(a[0], p23, a[1]);
  const __m512 hi01 = _mm512_permutex2var_ps(a[2], p01, a[3]), hi23 = _mm512_permutex2var_ps(a[2], p23, a[3]);
  _mm512_storeu_ps(&xs[0][r], _mm512_shuffle_f32x4(lo01, hi01, 0x44));
  _mm512_storeu_ps(&xs[1][r], _mm512_shuffle_f32x4(lo01, hi01, 0xEE));
  _mm512_storeu_ps(&xs[2][r], _mm512_shuffle_f32x4(lo23, hi23, 0x44));
  _mm512_storeu_ps(&xs[3][r], _mm512_shuffle_f32x4(lo23, hi23, 0xEE));
}
#endif

#if LUTC_ISA == 256
/* The AVX2 versions of the two above, 8 runs at a time. Scalar, they took ~5 ns per activation (AMD Zen 3: 20 us
 * of tables per 4096-wide row, a tenth of a 4096x4096 W2 GEMV). */

/* xs[b][r + j] = x[4j + b] for the 8 runs at x: two unpack stages leave the runs in the order (0, 4, 2, 6, 1, 5, 3,
 * 7), a permute by the same order (it is its own inverse) restores them. */
static inline void deinterleave8(const float* x, float xs[4][MAX_RUNS + VW], int64_t r) {
  const __m256 a0 = _mm256_loadu_ps(x), a1 = _mm256_loadu_ps(x + 8), a2 = _mm256_loadu_ps(x + 16),
               a3 = _mm256_loadu_ps(x + 24);
  const __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
  const __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
  const __m256i order = _mm256_setr_epi32(0, 4, 2, 6, 1, 5, 3, 7);
  _mm256_storeu_ps(&xs[0][r], _mm256_permutevar8x32_ps(_mm256_unpacklo_ps(t0, t2), order));
  _mm256_storeu_ps(&xs[1][r], _mm256_permutevar8x32_ps(_mm256_unpackhi_ps(t0, t2), order));
  _mm256_storeu_ps(&xs[2][r], _mm256_permutevar8x32_ps(_mm256_unpacklo_ps(t1, t3), order));
  _mm256_storeu_ps(&xs[3][r], _mm256_permutevar8x32_ps(_mm256_unpackhi_ps(t1, t3), order));
}

/* 8 entries x 8 runs of quantized floats -> 8 table rows [e0..e7, -e7..-e0]: packs to bytes (entry-major per lane
 * of 4 runs), a byte shuffle to run-major, then dword / qword unpacks pair each run's entries with their
 * mirrored negation. */
static inline void store_tables8(float t[8][MAX_RUNS + VW], int64_t r, int8_t* out, double* isum) {
  __m256i c[8];
  for (int i = 0; i < 8; ++i) c[i] = _mm256_cvtps_epi32(_mm256_loadu_ps(&t[i][r]));
  *isum -= vhsum(_mm256_loadu_ps(&t[0][r]));
  const __m256i run_major = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                             0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m256i rev = _mm256_setr_epi8(7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8,
                                       7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8);
  /* e0-3 / e4-7 of runs 0-3 (lane 0) and 4-7 (lane 1), 4 bytes per run */
  const __m256i b0 = _mm256_shuffle_epi8(_mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]),
                                                            _mm256_packs_epi32(c[2], c[3])), run_major);
  const __m256i b1 = _mm256_shuffle_epi8(_mm256_packs_epi16(_mm256_packs_epi32(c[4], c[5]),
                                                            _mm256_packs_epi32(c[6], c[7])), run_major);
  const __m256i lo = _mm256_unpacklo_epi32(b0, b1), hi = _mm256_unpackhi_epi32(b0, b1); /* runs 0,1|4,5; 2,3|6,7 */
  const __m256i nlo = _mm256_shuffle_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), lo), rev);
  const __m256i nhi = _mm256_shuffle_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), hi), rev);
  const __m256i r04 = _mm256_unpacklo_epi64(lo, nlo), r15 = _mm256_unpackhi_epi64(lo, nlo);
  const __m256i r26 = _mm256_unpacklo_epi64(hi, nhi), r37 = _mm256_unpackhi_epi64(hi, nhi);
  _mm256_storeu_si256((__m256i*)out, _mm256_permute2x128_si256(r04, r15, 0x20));
  _mm256_storeu_si256((__m256i*)(out + 32), _mm256_permute2x128_si256(r26, r37, 0x20));
  _mm256_storeu_si256((__m256i*)(out + 64), _mm256_permute2x128_si256(r04, r15, 0x31));
  _mm256_storeu_si256((__m256i*)(out + 96), _mm256_permute2x128_si256(r26, r37, 0x31));
}
#endif

int32_t SYM(lutc_precompute)(const float* x, int64_t k, int64_t k_pad, int64_t group, int8_t* tables,
                             float* tscale, float* xsum) {
  const int64_t rpg = group / 4;
  /* one group at a time, structure of arrays: xs[b][r] = activation b of run r, t[e][r] = entry e of run r */
  float xs[4][MAX_RUNS + VW], t[8][MAX_RUNS + VW];
  if (group > 4 * MAX_RUNS || group % 4 || k_pad % group) return -1;
  for (int64_t g = 0; g < k_pad / group; ++g) {
    int64_t r1 = 0; /* runs deinterleaved by vectors */
#if LUTC_ISA == 512
    if ((g + 1) * group <= k) {  /* a whole group inside x: deinterleave 16 runs by permutes */
      for (int64_t r = 0; r < rpg; r += 16) deinterleave16(x + (g * rpg + r) * 4, (rpg - r) * 4, xs, r);
      r1 = rpg;
    }
#elif LUTC_ISA == 256
    if ((g + 1) * group <= k)
      for (; r1 + 8 <= rpg; r1 += 8) deinterleave8(x + (g * rpg + r1) * 4, xs, r1);
#endif
    for (int64_t r = r1; r < rpg; ++r)
      for (int b = 0; b < 4; ++b) {
        const int64_t i = (g * rpg + r) * 4 + b;
        xs[b][r] = i < k ? x[i] : 0.0f;
      }
    for (int64_t r = rpg; r < rpg + VW; ++r)
      for (int b = 0; b < 4; ++b) xs[b][r] = 0.0f;
    vf amax = VSET(0.0f);
    for (int64_t r = 0; r < rpg; r += VW) {
      const vf x0 = VLOAD(&xs[0][r]), x1 = VLOAD(&xs[1][r]), x2 = VLOAD(&xs[2][r]), x3 = VLOAD(&xs[3][r]);
      const vf n0 = VNEG(x0), n1 = VNEG(x1), n2 = VNEG(x2);
      /* entry e: bit b of e set -> +x_b, clear -> -x_b; bit 3 is clear for the 8 stored entries */
      const vf e[8] = {VSUB(VADD(VADD(n0, n1), n2), x3), VSUB(VADD(VADD(x0, n1), n2), x3),
                       VSUB(VADD(VADD(n0, x1), n2), x3), VSUB(VADD(VADD(x0, x1), n2), x3),
                       VSUB(VADD(VADD(n0, n1), x2), x3), VSUB(VADD(VADD(x0, n1), x2), x3),
                       VSUB(VADD(VADD(n0, x1), x2), x3), VSUB(VADD(VADD(x0, x1), x2), x3)};
      for (int i = 0; i < 8; ++i) {
        VSTORE(&t[i][r], e[i]);
        amax = VMAX(amax, VABS(e[i]));
      }
    }
    /* padded lanes past rpg hold entries of zero activations (0): they never raise the max */
    float scale = vhmax(amax) / 127.0f;
    if (!(scale > 0.0f)) scale = 1.0f;
    const vf vs = VSET(scale), hi = VSET(127.0f), lo = VSET(-127.0f);
    for (int i = 0; i < 8; ++i)
      for (int64_t r = 0; r < rpg; r += VW) {
        vf q = VROUND(VDIV(VLOAD(&t[i][r]), vs));
        q = VMAX(lo, q);
        q = VSUB(VSET(0.0f), VMAX(VNEG(hi), VNEG(q)));  /* min(q, 127) */
        VSTORE(&t[i][r], q);
      }
    double isum = 0.0;
    int64_t r0 = 0;
#if LUTC_ISA == 512
    for (; r0 + 16 <= rpg; r0 += 16) store_tables16(t, r0, tables + (g * rpg + r0) * 16, &isum);
#elif LUTC_ISA == 256
    for (; r0 + 8 <= rpg; r0 += 8) store_tables8(t, r0, tables + (g * rpg + r0) * 16, &isum);
#endif
    for (int64_t r = r0; r < rpg; ++r) {
      int8_t* row = tables + (g * rpg + r) * 16;
      for (int i = 0; i < 8; ++i) {
        row[i] = (int8_t)t[i][r];
        row[15 - i] = (int8_t)-t[i][r];
      }
      isum -= row[0];
    }
    tscale[g] = scale;
    xsum[g] = (float)(isum * (double)scale);
  }
  return 0;
}

/* Flush one group: acc (int32 per row) * table scale * s/2 - s/2 * z' * xsum, into out[64]. */
static inline void flush_scalar(const int32_t* acc, float ts, float xs, const uint16_t* s, const int8_t* z, float* out) {
  for (int i = 0; i < 64; ++i) {
    float h = 0.5f * half_to_float(s[i]);
    out[i] += (float)acc[i] * ts * h - h * (float)z[i] * xs;
  }
}

#if LUTC_ISA == 512
/* s/2 of 16 rows (f16 scales) */
static inline __m512 half_scale(const uint16_t* s) {
  return _mm512_mul_ps(_mm512_set1_ps(0.5f), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)s)));
}

/* R rows of NT 64-row tiles (R * NT <= 4; tile j at w + j * dt tiles) with P pairs of bit planes (P <= 2: at
 * most 4 planes; TL: the last one is a half line): each weight load and nibble split serves all R rows' lookups,
 * and a run's P pairs are read together, so each tile's weights stream in order. A single row reads up to four
 * tiles at once (the `tiles` knob): more streams keep more cache-line fills in flight (LUTC_GEMV).
 * The scales are read in the group's epilogue (16 registers for four tiles' would spill across the lookups). */
static inline __attribute__((always_inline)) void tile_rows(
    const int8_t* tables, const float* tscale, const float* xsum, const uint8_t* w, const uint16_t* s,
    const int8_t* z, float* y, int64_t n_pad, int64_t runs, int64_t groups, int64_t bits, const int R, const int P,
    const int TL, const int NT, int64_t dt) {
  const int PF = P - TL; /* full lines per run */
  const int64_t rpg = runs / groups, wdt = dt * tile_bytes(runs, bits), sdt = dt * groups * 64;
  const __m512i lowmask = _mm512_set1_epi8(0x0F);
  const __m512i c_full = _mm512_set1_epi16(0x0201);  /* bytes (1, 2): plane 2p + 2 * plane 2p+1 */
  const __m512i c_last = (bits & 1) ? _mm512_set1_epi16(0x0001) : c_full;
  for (int row = 0; row < R; ++row)
    for (int j = 0; j < NT; ++j)
      for (int q = 0; q < 4; ++q) _mm512_storeu_ps(y + row * n_pad + j * dt * 64 + q * 16, _mm512_setzero_ps());
  for (int64_t g = 0; g < groups; ++g) {
    __m512i lo16[2][4], hi16[2][4];   /* [pair][row * NT + tile] */
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
      for (int a = 0; a < R * NT; ++a) lo16[p][a] = hi16[p][a] = _mm512_setzero_si512();
    const uint8_t *wp = w + (g * rpg) * PF * 64, *wh = half_lines(w, runs, bits) + (g * rpg) * 32;
    for (int64_t r = 0; r < rpg; ++r) {
      __m512i tab[4];
#pragma GCC unroll 4
      for (int row = 0; row < R; ++row)
        tab[row] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)(tables + (row * runs + g * rpg + r) * 16)));
#pragma GCC unroll 4
      for (int j = 0; j < NT; ++j)
#pragma GCC unroll 2
        for (int p = 0; p < P; ++p) {
          /* weights stream from DRAM once: ask for them PREFETCH_RUNS runs ahead, into L2 (T1): into L1 (T0), AMD
           * Zen 4 ran 1.2-1.5x slower at 4 or 1 tiles per pass and W3, and its speed swung with small changes of
           * the loop (bench/cpu_proto/gemv_streams.c); with T1 every tile count ran alike */
          const __m512i c = p == P - 1 ? c_last : c_full;
          _mm_prefetch((const char*)(p < PF ? wp + j * wdt + ((r + PREFETCH_RUNS) * PF + p) * 64
                                            : wh + j * wdt + (r + PREFETCH_RUNS) * 32), _MM_HINT_T1);
          const __m512i wv = line512(w + j * wdt, runs, bits, PF, g * rpg + r, p);
          const __m512i il = _mm512_and_si512(wv, lowmask);
          const __m512i ih = _mm512_and_si512(_mm512_srli_epi16(wv, 4), lowmask);
#pragma GCC unroll 4
          for (int row = 0; row < R; ++row) {
            const int a = row * NT + j;
            lo16[p][a] = _mm512_add_epi16(lo16[p][a], _mm512_maddubs_epi16(c, _mm512_shuffle_epi8(tab[row], il)));
            hi16[p][a] = _mm512_add_epi16(hi16[p][a], _mm512_maddubs_epi16(c, _mm512_shuffle_epi8(tab[row], ih)));
          }
        }
    }
    /* int16 sums of each pair -> float, weighted 4^p, times table scale and s/2 */
#pragma GCC unroll 2
    for (int p = 0; p < P; ++p) {
      const float wgt = (float)(1 << (2 * p));
#pragma GCC unroll 4
      for (int a = 0; a < R * NT; ++a) {
        const int row = a / NT, j = a % NT;
        const __m512 ts = _mm512_set1_ps(tscale[row * groups + g] * wgt);
        const __m512i parts[4] = {_mm512_cvtepi16_epi32(_mm512_castsi512_si256(lo16[p][a])),
                                  _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(lo16[p][a], 1)),
                                  _mm512_cvtepi16_epi32(_mm512_castsi512_si256(hi16[p][a])),
                                  _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(hi16[p][a], 1))};
        for (int q = 0; q < 4; ++q) {
          float* out = y + row * n_pad + j * dt * 64 + q * 16;
          const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(parts[q]), ts);
          _mm512_storeu_ps(out, _mm512_fmadd_ps(v, half_scale(s + j * sdt + g * 64 + q * 16), _mm512_loadu_ps(out)));
        }
      }
    }
#pragma GCC unroll 4
    for (int a = 0; a < R * NT; ++a) {
      const int row = a / NT, j = a % NT;
      const __m512 xs = _mm512_set1_ps(xsum[row * groups + g]);
      for (int q = 0; q < 4; ++q) {
        float* out = y + row * n_pad + j * dt * 64 + q * 16;
        const int64_t o = j * sdt + g * 64 + q * 16;
        const __m512 zf = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(z + o))));
        _mm512_storeu_ps(out, _mm512_fnmadd_ps(_mm512_mul_ps(half_scale(s + o), zf), xs, _mm512_loadu_ps(out)));
      }
    }
  }
}

/* m rows of one tile, at most `rows` (<= 4) rows per pass over the tile's weights; or (one row) `nt` tiles (2
 * or 4), `dt` tiles apart, in one pass. */
static inline void tile_gemv(const int8_t* tables, const float* tscale, const float* xsum, const uint8_t* w,
                             const uint16_t* s, const int8_t* z, float* y, int64_t m, int64_t n_pad, int64_t runs,
                             int64_t groups, int64_t pairs, int64_t bits, int64_t rows, int64_t nt, int64_t dt) {
  (void)pairs; /* the width picks the instantiation */
#define TR(R, P, TL, NT) tile_rows(tables + row * runs * 16, tscale + row * groups, xsum + row * groups, w, s, z,   \
                                  y + row * n_pad, n_pad, runs, groups, bits, R, P, TL, NT, dt)
#define ROWS(R, NT) (bits == 2 ? TR(R, 1, 0, NT) : bits == 4 ? TR(R, 2, 0, NT) : bits == 3 ? TR(R, 2, 1, NT) \
                                                                                    : TR(R, 1, 1, NT))
  if (nt > 1 && m == 1) {
    const int64_t row = 0;
    if (nt == 4) ROWS(1, 4);
    else ROWS(1, 2);
    return;
  }
  for (int64_t row = 0; row < m;) {
    const int64_t left = m - row, r = left < rows ? left : rows;
    if (r >= 4) { ROWS(4, 1); row += 4; }
    else if (r == 3) { ROWS(3, 1); row += 3; }
    else if (r == 2) { ROWS(2, 1); row += 2; }
    else { ROWS(1, 1); row += 1; }
  }
#undef ROWS
#undef TR
}
#elif LUTC_ISA == 256
/* One row of NT 64-row tiles (tile j at w + j * dt tiles; NT = 2 only for one pair: 16 ymm registers) with P pairs
 * of bit planes (P <= 2; TL: the last one a half line); a run's pairs are read together, so each tile's weights
 * stream in order (as in the AVX-512 kernel, which reads two tiles at once for the same reason). */
static inline __attribute__((always_inline)) void tile_row_pairs(
    const int8_t* tables, const float* tscale, const float* xsum, const uint8_t* w, const uint16_t* s,
    const int8_t* z, float* out, int64_t runs, int64_t groups, int64_t bits, const int P, const int TL, const int NT,
    int64_t dt) {
  const int64_t rpg = runs / groups, wdt = dt * tile_bytes(runs, bits), sdt = dt * groups * 64;
  const __m256i lowmask = _mm256_set1_epi8(0x0F);
  const __m256i c_full = _mm256_set1_epi16(0x0201);
  const __m256i c_last = (bits & 1) ? _mm256_set1_epi16(0x0001) : c_full;
  float acc_f[2][64];
  for (int j = 0; j < NT; ++j)
    for (int i = 0; i < 64; ++i) acc_f[j][i] = 0.0f;
  for (int64_t g = 0; g < groups; ++g) {
    /* per tile and pair: bytes 0..31 hold rows 0..15 (low nibbles) and 32..47 (high); bytes 32..63 rows 16..31,
     * 48..63 */
    __m256i a[2][4];
#pragma GCC unroll 2
    for (int jp = 0; jp < NT * P; ++jp)
      for (int i = 0; i < 4; ++i) a[jp][i] = _mm256_setzero_si256();
    for (int64_t r = 0; r < rpg; ++r) {
      const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(tables + (g * rpg + r) * 16)));
#pragma GCC unroll 2
      for (int jp = 0; jp < NT * P; ++jp) {
        const int j = jp / P, p = jp % P;
        const __m256i c = p == P - 1 ? c_last : c_full;
        __m256i w0, w1;
        /* into L2, PREFETCH_RUNS runs ahead, as the AVX-512 kernel does: AMD Zen 3, cold weights, same process,
         * two runs: 1.00-1.26x (11008x4096 W2 1.19-1.23x at 1 thread, W4 1.04-1.26x; never slower); on Zen 4
         * running this build it had measured 0-4% slower (session 13) */
        _mm_prefetch((const char*)(p < P - TL ? w + j * wdt + ((g * rpg + r + PREFETCH_RUNS) * (P - TL) + p) * 64
                                           : half_lines(w + j * wdt, runs, bits) + (g * rpg + r + PREFETCH_RUNS) * 32),
                     _MM_HINT_T1);
        line256(w + j * wdt, runs, bits, P - TL, g * rpg + r, p, &w0, &w1);
        a[jp][0] = _mm256_add_epi16(a[jp][0], _mm256_maddubs_epi16(c, _mm256_shuffle_epi8(tab, _mm256_and_si256(w0, lowmask))));
        a[jp][1] = _mm256_add_epi16(a[jp][1], _mm256_maddubs_epi16(c, _mm256_shuffle_epi8(tab, _mm256_and_si256(w1, lowmask))));
        a[jp][2] = _mm256_add_epi16(a[jp][2], _mm256_maddubs_epi16(c, _mm256_shuffle_epi8(tab, _mm256_and_si256(_mm256_srli_epi16(w0, 4), lowmask))));
        a[jp][3] = _mm256_add_epi16(a[jp][3], _mm256_maddubs_epi16(c, _mm256_shuffle_epi8(tab, _mm256_and_si256(_mm256_srli_epi16(w1, 4), lowmask))));
      }
    }
    /* acc_f += sums * table scale * s/2 - s/2 * z' * xsum, 8 rows per vector (a[.][q] holds rows 16q..16q+15); the
     * scalar version of this epilogue (flush_scalar) took 42% of a W2 4096x4096 GEMV: 354 -> 204 us at 1 thread,
     * W3 11008x4096 1430 -> 1081, W4 4096x4096 521 -> 448 (AMD Zen 4 running the AVX2 build, cold weights) */
    const __m256 ts = _mm256_set1_ps(tscale[g]), xsv = _mm256_set1_ps(xsum[g]), half = _mm256_set1_ps(0.5f);
    for (int j = 0; j < NT; ++j) {
      const uint16_t* sg = s + j * sdt + g * 64;
      const int8_t* zg = z + j * sdt + g * 64;
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q)
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          const int o = 16 * q + 8 * h;
          __m256i sum = _mm256_setzero_si256();
#pragma GCC unroll 2
          for (int p = 0; p < P; ++p) {
            const __m256i v16 = a[j * P + p][q];
            const __m128i part = h ? _mm256_extracti128_si256(v16, 1) : _mm256_castsi256_si128(v16);
            sum = _mm256_add_epi32(sum, _mm256_slli_epi32(_mm256_cvtepi16_epi32(part), 2 * p));
          }
          const __m256 hs = _mm256_mul_ps(half, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(sg + o))));
          const __m256 zf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(zg + o))));
          const __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sum), ts), hs);
          _mm256_storeu_ps(acc_f[j] + o, _mm256_sub_ps(_mm256_add_ps(_mm256_loadu_ps(acc_f[j] + o), v),
                                                        _mm256_mul_ps(_mm256_mul_ps(hs, zf), xsv)));
        }
    }
  }
  for (int j = 0; j < NT; ++j)
    for (int i = 0; i < 64; ++i) out[j * dt * 64 + i] = acc_f[j][i];
}

static inline void tile_row(const int8_t* tables, const float* tscale, const float* xsum, const uint8_t* w,
                             const uint16_t* s, const int8_t* z, float* out, int64_t runs, int64_t groups,
                             int64_t pairs, int64_t bits, int64_t nt, int64_t dt) {
#define TRP(P, TL, NT, DT) tile_row_pairs(tables, tscale, xsum, w, s, z, out, runs, groups, bits, P, TL, NT, DT)
  const int tl = (int)(bits & 1);
  if (pairs == 1 && nt == 2)
    tl ? TRP(1, 1, 2, dt) : TRP(1, 0, 2, dt);
  else if (pairs == 1)
    tl ? TRP(1, 1, 1, 0) : TRP(1, 0, 1, 0);
  else  /* two pairs of two tiles would need 16 accumulators (LUTC_GEMV pairs tiles for one pair only) */
    tl ? TRP(2, 1, 1, 0) : TRP(2, 0, 1, 0);
#undef TRP
}
#elif LUTC_ISA == 128
/* One row of one 64-row tile with P pairs of bit planes (P <= 2; TL: the last one a half line). vqtbl1q_s8 looks
 * up 16 indices in a run's 16-entry table; a full line's bytes alternate planes 2p and 2p+1 of a row (e, o), so
 * vpadalq_s8 (+ e + o, widened to int16) then vsraq_n_s16(.., 8) (+ o, the high byte of each int16) add e + 2o:
 * what vpmaddubsw with (1, 2) adds on x86. Accumulator a[p][v] holds rows 8v..8v+7 (v < 4: low nibbles, v >= 4:
 * high nibbles, rows 32 on). */
static inline __attribute__((always_inline)) void tile_row_neon(
    const int8_t* tables, const float* tscale, const float* xsum, const uint8_t* w, const uint16_t* s,
    const int8_t* z, float* out, int64_t runs, int64_t groups, int64_t bits, const int P, const int TL) {
  const int PF = P - TL; /* full lines per run */
  const int64_t rpg = runs / groups;
  const uint8x16_t lowmask = vdupq_n_u8(0x0F);
  float32x4_t acc_f[16];
  for (int i = 0; i < 16; ++i) acc_f[i] = vdupq_n_f32(0.0f);
  for (int64_t g = 0; g < groups; ++g) {
    int16x8_t a[2][8];
    for (int p = 0; p < P; ++p)
      for (int v = 0; v < 8; ++v) a[p][v] = vdupq_n_s16(0);
    const uint8_t *wp = w + g * rpg * PF * 64, *wh = half_lines(w, runs, bits) + g * rpg * 32;
    for (int64_t r = 0; r < rpg; ++r) {
      const int8x16_t tab = vld1q_s8(tables + (g * rpg + r) * 16);
      for (int p = 0; p < PF; ++p) {
        const uint8_t* l = wp + (r * PF + p) * 64;
        __builtin_prefetch(l + PREFETCH_RUNS * PF * 64);
        for (int v = 0; v < 4; ++v) {
          const uint8x16_t wv = vld1q_u8(l + 16 * v);
          const int8x16_t tl = vqtbl1q_s8(tab, vandq_u8(wv, lowmask)), th = vqtbl1q_s8(tab, vshrq_n_u8(wv, 4));
          a[p][v] = vsraq_n_s16(vpadalq_s8(a[p][v], tl), vreinterpretq_s16_s8(tl), 8);
          a[p][v + 4] = vsraq_n_s16(vpadalq_s8(a[p][v + 4], th), vreinterpretq_s16_s8(th), 8);
        }
      }
      if (TL) { /* the last plane alone: half-line byte i holds row i (low nibble) and row i + 32 (high) */
        const uint8_t* l = wh + r * 32;
        __builtin_prefetch(l + PREFETCH_RUNS * 32);
        for (int u = 0; u < 2; ++u) {
          const uint8x16_t wv = vld1q_u8(l + 16 * u);
          const int8x16_t tl = vqtbl1q_s8(tab, vandq_u8(wv, lowmask)), th = vqtbl1q_s8(tab, vshrq_n_u8(wv, 4));
          a[PF][2 * u] = vaddw_s8(a[PF][2 * u], vget_low_s8(tl));
          a[PF][2 * u + 1] = vaddw_high_s8(a[PF][2 * u + 1], tl);
          a[PF][2 * u + 4] = vaddw_s8(a[PF][2 * u + 4], vget_low_s8(th));
          a[PF][2 * u + 5] = vaddw_high_s8(a[PF][2 * u + 5], th);
        }
      }
    }
    /* per 4 rows: int32 sum of the pairs weighted 4^p, times table scale and s/2, minus s/2 * z' * xsum */
    const float ts = tscale[g];
    const float32x4_t xs = vdupq_n_f32(xsum[g]), halfv = vdupq_n_f32(0.5f);
    for (int v = 0; v < 8; ++v) {
      int32x4_t lo = vdupq_n_s32(0), hi = lo;
      for (int p = 0; p < P; ++p) {
        const int32x4_t sh = vdupq_n_s32(2 * p);
        lo = vaddq_s32(lo, vshlq_s32(vmovl_s16(vget_low_s16(a[p][v])), sh));
        hi = vaddq_s32(hi, vshlq_s32(vmovl_high_s16(a[p][v]), sh));
      }
      const float16x8_t sv = vreinterpretq_f16_u16(vld1q_u16(s + g * 64 + 8 * v));
      const int16x8_t zv = vmovl_s8(vld1_s8(z + g * 64 + 8 * v));
      const float32x4_t h[2] = {vmulq_f32(halfv, vcvt_f32_f16(vget_low_f16(sv))), vmulq_f32(halfv, vcvt_high_f32_f16(sv))};
      const float32x4_t zf[2] = {vcvtq_f32_s32(vmovl_s16(vget_low_s16(zv))), vcvtq_f32_s32(vmovl_high_s16(zv))};
      const int32x4_t iv[2] = {lo, hi};
      for (int q = 0; q < 2; ++q) {
        float32x4_t* o = &acc_f[2 * v + q];
        *o = vfmaq_f32(*o, vmulq_n_f32(vcvtq_f32_s32(iv[q]), ts), h[q]);
        *o = vfmsq_f32(*o, vmulq_f32(h[q], zf[q]), xs);
      }
    }
  }
  for (int i = 0; i < 16; ++i) vst1q_f32(out + 4 * i, acc_f[i]);
}

static inline void tile_row(const int8_t* tables, const float* tscale, const float* xsum, const uint8_t* w,
                             const uint16_t* s, const int8_t* z, float* out, int64_t runs, int64_t groups,
                             int64_t pairs, int64_t bits, int64_t nt, int64_t dt) {
  (void)nt, (void)dt; /* one tile per pass (LUTC_GEMV's MAX_TILES is 1) */
#define TRN(P, TL) tile_row_neon(tables, tscale, xsum, w, s, z, out, runs, groups, bits, P, TL)
  const int tl = (int)(bits & 1);
  if (pairs == 1)
    tl ? TRN(1, 1) : TRN(1, 0);
  else
    tl ? TRN(2, 1) : TRN(2, 0);
#undef TRN
}
#else
static inline void tile_row(const int8_t* tables, const float* tscale, const float* xsum, const uint8_t* w,
                             const uint16_t* s, const int8_t* z, float* out, int64_t runs, int64_t groups,
                             int64_t pairs, int64_t bits, int64_t nt, int64_t dt) {
  (void)nt, (void)dt; /* the portable kernel reads one tile per pass (LUTC_GEMV's MAX_TILES is 1) */
  const int64_t rpg = runs / groups;
  float acc_f[64];
  for (int i = 0; i < 64; ++i) acc_f[i] = 0.0f;
  for (int64_t g = 0; g < groups; ++g) {
    int32_t acc32[64];
    for (int i = 0; i < 64; ++i) acc32[i] = 0;
    for (int64_t p = 0; p < pairs; ++p) {
      const int c1 = (p == pairs - 1 && (bits & 1)) ? 0 : 2;
      for (int64_t r = 0; r < rpg; ++r) {
        const int8_t* tab = tables + (g * rpg + r) * 16;
        uint8_t wv[64];
        line_bytes(w, runs, bits, g * rpg + r, p, wv);
        for (int i = 0; i < 32; ++i) {
          const uint8_t b0 = wv[2 * i], b1 = wv[2 * i + 1];
          acc32[i] += (tab[b0 & 15] + c1 * tab[b1 & 15]) << (2 * p);
          acc32[i + 32] += (tab[b0 >> 4] + c1 * tab[b1 >> 4]) << (2 * p);
        }
      }
    }
    flush_scalar(acc32, tscale[g], xsum[g], s + g * 64, z + g * 64, acc_f);
  }
  for (int i = 0; i < 64; ++i) out[i] = acc_f[i];
}
#endif

#if LUTC_ISA != 512
static inline void tile_gemv(const int8_t* tables, const float* tscale, const float* xsum, const uint8_t* w,
                             const uint16_t* s, const int8_t* z, float* y, int64_t m, int64_t n_pad, int64_t runs,
                             int64_t groups, int64_t pairs, int64_t bits, int64_t rows, int64_t nt, int64_t dt) {
  (void)rows; /* one row per pass; nt > 1 only comes with one row */
  for (int64_t row = 0; row < m; ++row)
    tile_row(tables + row * runs * 16, tscale + row * groups, xsum + row * groups, w, s, z, y + row * n_pad, runs,
             groups, pairs, bits, nt, dt);
}
#endif

/* the most tiles one row's pass reads (the `tiles` knob's cap): AVX-512 four at every width; AVX2 two for one pair
 * of planes (16 ymm registers; W1, W2, ternary: +27% at 11008x4096, where W4 ran 5% slower); `pairs` is the entry
 * point's local */
/* the SIMD GEMVs read at most two pairs of bit planes per run (kernel.py library_table gives wider weights float
 * tables there; the portable build loops over any number) */
#define LUTC_GEMV_MAX_BITS (LUTC_ISA == 0 ? 8 : 4)
LUTC_GEMV(lutc_gemv, int8_t, tile_gemv, LUTC_ISA == 512 ? 4 : LUTC_ISA == 256 && pairs == 1 ? 2 : 1)

/* The SwiGLU prologue of a fused "silu(gate) * up -> LUT matmul": x = [gate | up] (2k floats, the gate/up
 * matmul's output row), out = silu(gate) * up, where silu(g) = g / (1 + e^-g) is computed from e = e^-|g| so
 * nothing overflows. The sign select is one of bits: with `neg ? e * r : r` gcc 12 kept the loop scalar ("control
 * flow in loop"; AVX-512 only with both sides computed), 12 ns per element on AMD Zen 3, 9% of a SmolLM2 decode
 * step's main thread. */
int32_t SYM(lutc_swiglu)(const float* x, int64_t k, float* out) {
  for (int64_t i = 0; i < k; ++i) {
    const float g = x[i];
    uint32_t bits;
    memcpy(&bits, &g, sizeof bits);
    const uint32_t neg = bits >> 31;
    bits &= 0x7fffffffu;
    float a;
    memcpy(&a, &bits, sizeof a);
    const float e = exp_nonpos(-a), r = 1.0f / (1.0f + e), er = e * r;
    uint32_t rb, erb;
    memcpy(&rb, &r, sizeof rb);
    memcpy(&erb, &er, sizeof erb);
    const uint32_t pick = (erb & (0u - neg)) | (rb & (neg - 1u)); /* neg ? er : r, as bits */
    float sel;
    memcpy(&sel, &pick, sizeof sel);
    out[i] = g * sel * x[k + i];
  }
  return 0;
}

/* The RMSNorm prologue of a fused "rms_norm -> LUT matmul": out = x / sqrt(mean(x^2) + eps) * w, one row, so the
 * activation is read once, normalized into a small scratch row and turned into tables while it is in L1. The sum
 * of squares runs in 4 x VW lanes: one float accumulator made it a chain of dependent adds (1.6 us per row of
 * 1536, which a 128-row prefill call paid 128 times on one thread). */
int32_t SYM(lutc_rmsnorm)(const float* x, const float* w, int64_t k, float eps, float* out) {
  vf a0 = VSET(0.0f), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 4 * VW <= k; i += 4 * VW) {
    const vf x0 = VLOAD(x + i), x1 = VLOAD(x + i + VW), x2 = VLOAD(x + i + 2 * VW), x3 = VLOAD(x + i + 3 * VW);
    a0 = VADD(a0, VMUL(x0, x0));
    a1 = VADD(a1, VMUL(x1, x1));
    a2 = VADD(a2, VMUL(x2, x2));
    a3 = VADD(a3, VMUL(x3, x3));
  }
  float ss = vhsum(VADD(VADD(a0, a1), VADD(a2, a3)));
  for (; i < k; ++i) ss += x[i] * x[i];
  const float r = 1.0f / sqrtf(ss / (float)k + eps);
  for (i = 0; i < k; ++i) out[i] = x[i] * r * w[i];
  return 0;
}

/* o16: 16 floats in the vectors of this ISA; o16_fma(p, x, a) = a + (16 f16 values at p) * x */
#if LUTC_ISA == 512
typedef __m512 o16;
static inline o16 o16_fma(const uint16_t* p, float x, o16 a) {
  return _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)), _mm512_set1_ps(x), a);
}
static inline o16 o16_zero(void) { return _mm512_setzero_ps(); }
static inline void o16_add_to(float* y, o16 a) { _mm512_storeu_ps(y, _mm512_add_ps(_mm512_loadu_ps(y), a)); }
#elif LUTC_ISA == 256
typedef struct { __m256 v[2]; } o16;
static inline o16 o16_fma(const uint16_t* p, float x, o16 a) {
  const __m256 xv = _mm256_set1_ps(x);
  for (int h = 0; h < 2; ++h)
    a.v[h] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(p + 8 * h))), xv, a.v[h]);
  return a;
}
static inline o16 o16_zero(void) { return (o16){{_mm256_setzero_ps(), _mm256_setzero_ps()}}; }
static inline void o16_add_to(float* y, o16 a) {
  for (int h = 0; h < 2; ++h) _mm256_storeu_ps(y + 8 * h, _mm256_add_ps(_mm256_loadu_ps(y + 8 * h), a.v[h]));
}
#elif LUTC_ISA == 128
typedef struct { float32x4_t v[4]; } o16;
static inline o16 o16_fma(const uint16_t* p, float x, o16 a) {
  for (int h = 0; h < 4; ++h) a.v[h] = vfmaq_n_f32(a.v[h], vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p + 4 * h))), x);
  return a;
}
static inline o16 o16_zero(void) { return (o16){{vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)}}; }
static inline void o16_add_to(float* y, o16 a) {
  for (int h = 0; h < 4; ++h) vst1q_f32(y + 4 * h, vaddq_f32(vld1q_f32(y + 4 * h), a.v[h]));
}
#else
typedef struct { float v[16]; } o16;
static inline o16 o16_fma(const uint16_t* p, float x, o16 a) {
  for (int i = 0; i < 16; ++i) a.v[i] += half_to_float(p[i]) * x;
  return a;
}
static inline o16 o16_zero(void) { return (o16){{0}}; }
static inline void o16_add_to(float* y, o16 a) {
  for (int i = 0; i < 16; ++i) y[i] += a.v[i];
}
#endif

/* The real-valued part of the zero points (codegen/cpu/layout.py): y[row, t*64 + i] += sum_g o[t][g][i] *
 * xsum[row][g] for rows row0..row1 and tiles tile0..tile1, after any kernel wrote them (xsum: the group sums of
 * the activations as its tables or int8 activations hold them, so the term rounds like the rest of the result).
 * A tile's offsets (groups x 128 bytes) stay in L1/L2 while the rows go by. */
int32_t SYM(lutc_offsets)(const float* xsum, const uint16_t* o, float* y, int64_t m, int64_t n_pad, int64_t groups,
                          int64_t tile0, int64_t tile1, int64_t row0, int64_t row1) {
  if (row0 < 0 || row1 > m || tile0 < 0 || tile1 * 64 > n_pad) return -1;
  for (int64_t t = tile0; t < tile1; ++t) {
    const uint16_t* ot = o + t * groups * 64;
    for (int64_t row = row0; row < row1; ++row) {
      const float* xs = xsum + row * groups;
      o16 a0 = o16_zero(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t g = 0; g < groups; ++g) {
        const uint16_t* og = ot + g * 64;
        a0 = o16_fma(og, xs[g], a0);
        a1 = o16_fma(og + 16, xs[g], a1);
        a2 = o16_fma(og + 32, xs[g], a2);
        a3 = o16_fma(og + 48, xs[g], a3);
      }
      float* yr = y + row * n_pad + t * 64;
      o16_add_to(yr, a0);
      o16_add_to(yr + 16, a1);
      o16_add_to(yr + 32, a2);
      o16_add_to(yr + 48, a3);
    }
  }
  return 0;
}
