/* Shared by the LUT micro-kernel sources (lut_kernels.c: int8 tables, lut_f32_kernels.c: float tables): the ISA
 * suffix of every symbol (LUTC_ISA = 512, 256, 128 for aarch64 NEON, or 0), f16 scales, and the lookup entry point that walks row blocks
 * and N tiles for the TVM-generated driver (codegen/cpu/build.py). */
#ifndef LUTC_COMMON_H
#define LUTC_COMMON_H
#include <math.h>
#include <stdint.h>
#include <string.h>
#if LUTC_ISA == 512 || LUTC_ISA == 256
#include <immintrin.h>
#elif LUTC_ISA == 128
#include <arm_neon.h>
#endif

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#if LUTC_ISA == 512
#define SYM(name) CAT(name, avx512)
#elif LUTC_ISA == 256
#define SYM(name) CAT(name, avx2)
#elif LUTC_ISA == 128
#define SYM(name) CAT(name, neon)
#else
#define SYM(name) CAT(name, generic)
#endif

/* e^x for x <= 0 (softmax scores after the max is subtracted, silu of -|x|): 2^n e^f with n = round(x / ln 2), f reduced in
 * two parts (Cody-Waite), a degree-7 Taylor polynomial on |f| <= ln2 / 2 (error ~5e-9 before float rounding).
 * Branch-free, with only integer clamps, so gcc vectorizes the loops that call it (expf stays scalar, and a
 * float compare may trap). Below ~-87.3, where e^x leaves the normal floats, it gives 0. */
static inline float exp_nonpos(float x) {
  const int32_t n = (int32_t)(x * 1.44269504088896341f - 0.5f);  /* round to nearest for x <= 0 */
  const float f = (x - (float)n * 0.693145751953125f) - (float)n * 1.428606765330187e-06f;
  const float e = 1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6 + f * (1.0f / 24 + f * (1.0f / 120 +
                  f * (1.0f / 720 + f * (1.0f / 5040)))))));
  const int32_t biased = n + 127;
  const int32_t bits = (biased > 0 ? biased : 0) << 23;  /* 2^n, or 0 below the normal range */
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return e * scale;
}

/* Weight layout "x86-g4-n64-v2" (codegen/cpu/layout.py), per 64-row tile: `runs` x (bits / 2) full lines of 64
 * bytes (line (j, p): byte 2i+q holds plane 2p+q's 4-bit index of row i in its low nibble, of row i+32 in its high
 * one), then, for odd widths, `runs` half lines of 32 bytes holding the last plane alone (byte i: row i low, row
 * i+32 high). v1 padded that plane with an all-zero partner: W3 moved W4's bytes and W1 W2's. */
static inline int64_t tile_bytes(int64_t runs, int64_t bits) { return runs * ((bits / 2) * 64 + (bits & 1) * 32); }

/* the half lines of a tile (odd widths) */
static inline const uint8_t* half_lines(const uint8_t* wt, int64_t runs, int64_t bits) {
  return wt + runs * (bits / 2) * 64;
}

/* Line (run j, pair p) of a tile in the full lines' byte order, for the kernels that read it byte by byte: a half
 * line's byte i lands on byte 2i, its missing partner plane reads 0. */
static inline void line_bytes(const uint8_t* wt, int64_t runs, int64_t bits, int64_t j, int64_t p, uint8_t out[64]) {
  if (p < bits / 2) {
    memcpy(out, wt + (j * (bits / 2) + p) * 64, 64);
  } else {
    const uint8_t* h = half_lines(wt, runs, bits) + j * 32;
    for (int i = 0; i < 32; ++i) out[2 * i] = h[i], out[2 * i + 1] = 0;
  }
}

#if LUTC_ISA == 512
/* Line (run j, pair p) in the full lines' byte order, one vector (PF: full lines per run). */
static inline __m512i line512(const uint8_t* wt, int64_t runs, int64_t bits, int PF, int64_t j, int p) {
  if (p < PF) return _mm512_loadu_si512((const void*)(wt + (j * PF + p) * 64));
  return _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(half_lines(wt, runs, bits) + j * 32)));
}
#endif

#if LUTC_ISA == 256
/* The two 32-byte halves of line (run j, pair p) in the full lines' byte order (PF: full lines per run). */
static inline void line256(const uint8_t* wt, int64_t runs, int64_t bits, int PF, int64_t j, int p, __m256i* w0,
                           __m256i* w1) {
  if (p < PF) {
    const uint8_t* l = wt + (j * PF + p) * 64;
    *w0 = _mm256_loadu_si256((const __m256i*)l);
    *w1 = _mm256_loadu_si256((const __m256i*)(l + 32));
  } else {
    const uint8_t* h = half_lines(wt, runs, bits) + j * 32;
    *w0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)h));
    *w1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(h + 16)));
  }
}
#endif

#define MAX_RPG 64 /* runs per group of the int8 kernels: group <= 256 (layout.py MAX_GROUP) */
#ifndef PREFETCH_RUNS
#define PREFETCH_RUNS 32 /* 2 KiB ahead of the 64-byte weight loads (16-64 measured alike; 128 no better) */
#endif

static inline float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  /* subnormal */
      float f = ldexpf((float)man, -24);
      return sign ? -f : f;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* The lookup entry point: rows row0..row1 of y[m, :] (in blocks of mblock rows; 0: one block), N tiles
 * tile0..tile1: y[row, t*64 + i]. TILE(...) computes one tile for a block of rows, at most `rows` rows per pass
 * over the tile's weights; for a single row it may instead read `nt` tiles `dt` tiles apart in one pass: the
 * range's first `tiles` parts of q tiles go together (tile t with t + q, t + 2q...), then what is left in halves
 * of that, down to single tiles. `tiles` (1, 2 or 4) is a schedule knob, capped at what the micro-kernel has
 * (MAX_TILES: 1, 2 or 4): more weight streams keep more of a core's DRAM reads in flight: 4 ran 7-10% faster
 * than 2 on Sapphire Rapids, and up to 10% on AMD Zen 4 (W2-W4, 1 and 2 threads; bench/cpu_proto/gemv_streams.c).
 * Knobs (rows, mblock, tiles) and ranges come from the driver. */
#define LUTC_GEMV(NAME, TT, TILE, MAX_TILES)                                                                        \
  int32_t SYM(NAME)(const TT* tables, const float* tscale, const float* xsum, const uint8_t* w, const uint16_t* s, \
                    const int8_t* z, float* y, int64_t m, int64_t n_pad, int64_t runs, int64_t groups, int64_t bits, \
                    int64_t tile0, int64_t tile1, int64_t row0, int64_t row1, int64_t rows, int64_t mblock,          \
                    int64_t tiles) {                                                                                \
    const int64_t pairs = (bits + 1) / 2, tb = tile_bytes(runs, bits);                                              \
    if (runs % groups || rows < 1 || row0 < 0 || row1 > m || (tiles != 1 && tiles != 2 && tiles != 4)) return -1;  \
    if (bits < 1 || bits > LUTC_GEMV_MAX_BITS) return -1;                                                          \
    const int64_t streams = tiles < (MAX_TILES) ? tiles : (MAX_TILES);                                              \
    if (mblock <= 0) mblock = row1 - row0 > 0 ? row1 - row0 : 1;                                                   \
    for (int64_t r0 = row0; r0 < row1; r0 += mblock) {                                                              \
      const int64_t r1 = r0 + mblock < row1 ? r0 + mblock : row1;                                                   \
      int64_t t0 = tile0;                                                                                           \
      for (int64_t nt = r1 - r0 == 1 ? streams : 1; nt >= 1; nt /= 2) {                                             \
        const int64_t q = (tile1 - t0) / nt; /* tiles t, t + q, ... t + (nt - 1) q in one pass */                   \
        for (int64_t t = t0; t < t0 + q; ++t)                                                                       \
          TILE(tables + r0 * runs * 16, tscale + r0 * groups, xsum + r0 * groups, w + t * tb,                       \
               s + t * groups * 64, z + t * groups * 64, y + r0 * n_pad + t * 64, r1 - r0, n_pad, runs, groups,    \
               pairs, bits, rows, nt, q);                                                                           \
        t0 += nt * q;                                                                                               \
      }                                                                                                             \
    }                                                                                                               \
    return 0;                                                                                                       \
  }

#endif
