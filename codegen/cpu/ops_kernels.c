/* The non-LUT ops of a decoder layer as C micro-kernels, driven by TVM-generated entry points (ops.py):
 * attention (GQA, causal top-left or bottom-right aligned), RoPE (rotate-half), SwiGLU, and a decoder layer's
 * whole attention block (RoPE of q and k, the KV-cache append, attention) in one call. Inputs may be strided
 * views (TVM passes the DLPack strides; the innermost stride must be 1), outputs are contiguous. One source for
 * every ISA: plain loops that gcc vectorizes for the flags it is given, and AVX-512 intrinsics for the attention
 * block's scores and value sums (LUTC_ISA == 512). */
#include <stdlib.h>

#include "lut_common.h" /* exp_nonpos */

#define MAX_STACK_KEYS 4096
#define MAX_HEAD_DIM 512
#define MAX_GROUP 8       /* query heads per KV head processed together (more go through in slices) */

/* The 16 partial sums of a vectorized reduction, added as a tree (8, 4, 2, 1 wide) that gcc turns into a few
 * vector adds: a serial chain of 16 scalar adds per dot product cost more than the products themselves. */
static inline float tree16(float* acc) {
  for (int j = 0; j < 8; ++j) acc[j] += acc[j + 8];
  for (int j = 0; j < 4; ++j) acc[j] += acc[j + 4];
  return (acc[0] + acc[2]) + (acc[1] + acc[3]);
}

/* 16 partial sums: gcc vectorizes this without -ffast-math (a plain reduction it would keep scalar) */
static inline float dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {0}, s = 0.0f;
  const int64_t n16 = n & ~(int64_t)15;
  for (int64_t i = 0; i < n16; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  for (int64_t i = n16; i < n; ++i) s += a[i] * b[i];
  return s + tree16(acc);
}

/* 16 partial sums, as in dot() */
static inline float sum16(const float* a, int64_t n) {
  float acc[16] = {0}, s = 0.0f;
  const int64_t n16 = n & ~(int64_t)15;
  for (int64_t i = 0; i < n16; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j];
  for (int64_t i = n16; i < n; ++i) s += a[i];
  return s + tree16(acc);
}

/* p[0..n) = softmax(p[0..n)) in place, given mx = max(p) */
static inline void softmax_inplace(float* p, int64_t n, float mx) {
  for (int64_t s = 0; s < n; ++s) p[s] = exp_nonpos(p[s] - mx);
  const float inv = 1.0f / sum16(p, n);
  for (int64_t s = 0; s < n; ++s) p[s] *= inv;
}

/* out[0..D) = (x * c + rotate_half(x) * sn) * scale, rotate_half(x) = (-x[D/2:], x[:D/2]): one RoPE'd row (scale 1
 * is exact: the product rounds to itself) */
static inline void rope_row(const float* x, const float* c, const float* sn, int64_t D, float scale, float* out) {
  const int64_t half = D / 2;
  for (int64_t d = 0; d < half; ++d) out[d] = (x[d] * c[d] - x[d + half] * sn[d]) * scale;
  for (int64_t d = half; d < D; ++d) out[d] = (x[d] * c[d] + x[d - half] * sn[d]) * scale;
}

/* out[b, h, l, :] = softmax(scale * q[b, h, l, :] . k[b, h / rep, :, :]^T, causal) @ v[b, h / rep, :, :]
 * for heads h0 <= h < h1 (the driver splits heads over threads). Keys s > l + off are masked when causal. */
int32_t lutc_attention_f32(const float* q, int64_t q0, int64_t q1, int64_t q2, const float* k, int64_t k0,
                           int64_t k1, int64_t k2, const float* v, int64_t v0, int64_t v1, int64_t v2, float* out,
                           int64_t B, int64_t Hq, int64_t Hk, int64_t L, int64_t S, int64_t D, float scale,
                           int64_t causal, int64_t off, int64_t h0, int64_t h1) {
  const int64_t rep = Hq / Hk;
  float stack_p[MAX_STACK_KEYS];
  float* p = S <= MAX_STACK_KEYS ? stack_p : (float*)malloc(sizeof(float) * S);
  if (!p) return -1;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = h0; h < h1; ++h) {
      const float* kh = k + b * k0 + (h / rep) * k1;
      const float* vh = v + b * v0 + (h / rep) * v1;
      for (int64_t l = 0; l < L; ++l) {
        const float* ql = q + b * q0 + h * q1 + l * q2;
        float* o = out + ((b * Hq + h) * L + l) * D;
        int64_t n = causal ? l + off + 1 : S;
        if (n > S) n = S;
        if (n <= 0) {  /* a fully masked row gives 0, as torch's safe softmax does */
          for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
          continue;
        }
        float mx = -INFINITY;
        for (int64_t s = 0; s < n; ++s) {
          p[s] = dot(ql, kh + s * k2, D) * scale;
          mx = p[s] > mx ? p[s] : mx;
        }
        softmax_inplace(p, n, mx);
        for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
        for (int64_t s = 0; s < n; ++s) {
          const float* vs = vh + s * v2;
          const float w = p[s];
          for (int64_t d = 0; d < D; ++d) o[d] += w * vs[d];
        }
      }
    }
  if (p != stack_p) free(p);
  return 0;
}

/* out[b, h, l, :] = x * cos[l] + rotate_half(x) * sin[l], rotate_half(x) = (-x[D/2:], x[:D/2]). */
int32_t lutc_rope_f32(const float* x, int64_t x0, int64_t x1, int64_t x2, const float* cos_t, const float* sin_t,
                      float* out, int64_t B, int64_t H, int64_t L, int64_t D) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t l = 0; l < L; ++l)
        rope_row(x + b * x0 + h * x1 + l * x2, cos_t + l * D, sin_t + l * D, D, 1.0f,
                 out + ((b * H + h) * L + l) * D);
  return 0;
}

/* out = silu(gate) * up over n contiguous elements. */
int32_t lutc_swiglu_f32(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
  return 0;
}

/* y[0..4) = x . w[0..4) for four consecutive weight rows of length K: with AVX-512, four independent FMA chains
 * that load each x chunk once for the four rows (gcc does not vectorize the 2-D accumulator form of dot()). */
static inline void dot4(const float* x, const float* w, int64_t K, float* y) {
#if LUTC_ISA == 512
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  const int64_t k16 = K & ~(int64_t)15;
  for (int64_t i = 0; i < k16; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    for (int r = 0; r < 4; ++r) acc[r] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w + r * K + i), acc[r]);
  }
  if (k16 < K) {
    const __mmask16 m = (__mmask16)((1u << (K - k16)) - 1);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + k16);
    for (int r = 0; r < 4; ++r) acc[r] = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, w + r * K + k16), acc[r]);
  }
  for (int r = 0; r < 4; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
#else
  for (int r = 0; r < 4; ++r) y[r] = dot(x, w + r * K, K);
#endif
}

/* y[r, n] = x[r, :] . w[n, :] for rows r < M and outputs n0 <= n < n1 (the driver splits N over threads): a float
 * linear layer (an lm_head left unquantized) for the few rows of a decode step, the weights streamed once, four
 * rows at a time against every activation row while they sit in cache. Rows of x are xs floats apart. */
int32_t lutc_linear_f32(const float* x, int64_t xs, const float* w, float* y, int64_t M, int64_t N, int64_t K,
                        int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4)
    for (int64_t r = 0; r < M; ++r) {
      float out[4];
      dot4(x + r * xs, w + n * K, K, out);
      for (int j = 0; j < 4; ++j) y[r * N + n + j] = out[j];
    }
  for (; n < n1; ++n)
    for (int64_t r = 0; r < M; ++r) y[r * N + n] = dot(x + r * xs, w + n * K, K);
  return 0;
}

/* How far ahead (bytes) the float16 linear kernel prefetches its weight rows, into L2. Without it the float16 lm_head
 * of SmolLM2 (49152 x 576, 57 MB) took about as long as the float32 one (113 MB): a 2-vCPU Xeon (Sapphire Rapids
 * class) read 4.1 / 2.3 ms (float32 / float16) at 2 threads with it at 9 KB, 4.1 / 3.4 without; 4.6 KB ran the same,
 * 2 KB slower (bench: cold rows, 7 runs; the float32 kernel gained nothing from the same prefetch). */
#define F16_PREFETCH 9216

/* f[0..n) = the float16 values h[0..n) as float32 (exact) */
static void half_row(const uint16_t* h, float* f, int64_t n) {
  int64_t i = 0;
  for (int64_t p = 0; p < n; p += 32) __builtin_prefetch((const char*)(h + p) + F16_PREFETCH, 0, 2);
#if LUTC_ISA == 512
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(f + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(h + i))));
#elif LUTC_ISA == 256
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(h + i))));
#elif LUTC_ISA == 128
  for (; i + 4 <= n; i += 4) vst1q_f32(f + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h + i))));
#endif
  for (; i < n; ++i) f[i] = half_to_float(h[i]); /* lut_common.h */
}

#if LUTC_ISA == 512
/* dot4 on four float16 weight rows, widened as they are loaded (the same FMA chains: the same sums) */
static inline void dot4_f16(const float* x, const uint16_t* w, int64_t K, float* y) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  const int64_t k16 = K & ~(int64_t)15;
  for (int64_t i = 0; i < k16; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    if ((i & 31) == 0)   /* one line per row and two steps */
      for (int r = 0; r < 4; ++r) __builtin_prefetch((const char*)(w + r * K + i) + F16_PREFETCH, 0, 2);
    for (int r = 0; r < 4; ++r)
      acc[r] = _mm512_fmadd_ps(xv, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(w + r * K + i))), acc[r]);
  }
  if (k16 < K) {
    const __mmask16 m = (__mmask16)((1u << (K - k16)) - 1);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + k16);
    for (int r = 0; r < 4; ++r)
      acc[r] = _mm512_fmadd_ps(xv, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + r * K + k16)), acc[r]);
  }
  for (int r = 0; r < 4; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
}
#endif

/* lutc_linear_f32 over float16 weights (an lm_head a QuantConfig left in float, stored in half the bytes): four
 * weight rows at a time widened (in the FMA loop for decode rows on AVX-512, else into a scratch row block) and
 * summed as the float32 kernel sums, so the result equals lutc_linear_f32 on the same (float16-valued) weights.
 * Returns 1 when the scratch cannot be had. */
int32_t lutc_linear_f16(const float* x, int64_t xs, const uint16_t* w, float* y, int64_t M, int64_t N, int64_t K,
                        int64_t n0, int64_t n1) {
  float* buf = (float*)malloc((size_t)(4 * K > 0 ? 4 * K : 1) * sizeof(float));
  if (!buf) return 1;
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
#if LUTC_ISA == 512
    if (M <= 2) {   /* a decode step: widened in the FMA loop, no scratch pass */
      for (int64_t r = 0; r < M; ++r) {
        float out[4];
        dot4_f16(x + r * xs, w + n * K, K, out);
        for (int j = 0; j < 4; ++j) y[r * N + n + j] = out[j];
      }
      continue;
    }
#endif
    half_row(w + n * K, buf, 4 * K);
    for (int64_t r = 0; r < M; ++r) {
      float out[4];
      dot4(x + r * xs, buf, K, out);
      for (int j = 0; j < 4; ++j) y[r * N + n + j] = out[j];
    }
  }
  for (; n < n1; ++n) {
    half_row(w + n * K, buf, K);
    for (int64_t r = 0; r < M; ++r) y[r * N + n] = dot(x + r * xs, buf, K);
  }
  free(buf);
  return 0;
}

#if LUTC_ISA == 512
/* hsum16(v): lane j = the sum of the 16 lanes of v[HSUM_SLOT[j]] (a transposing tree of 15 adds, where 16 separate
 * horizontal sums would take 4 shuffles and 4 adds each). */
static const int HSUM_SLOT[16] = {0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15};

static inline __m512 hsum16(const __m512* v) {
  __m512 u[8], w[4], x[2];
  for (int i = 0; i < 8; ++i)
    u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[i], v[i + 8], 0x44), _mm512_shuffle_f32x4(v[i], v[i + 8], 0xEE));
  for (int i = 0; i < 4; ++i)
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[i], u[i + 4], 0x88), _mm512_shuffle_f32x4(u[i], u[i + 4], 0xDD));
  for (int i = 0; i < 2; ++i)
    x[i] = _mm512_add_ps(_mm512_shuffle_ps(w[i], w[i + 2], 0x44), _mm512_shuffle_ps(w[i], w[i + 2], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_ps(x[0], x[1], 0x88), _mm512_shuffle_ps(x[0], x[1], 0xDD));
}

/* p[r * S + s] = qr[r] . kh[s] for the G query rows and keys s < n, 16 keys at a time (a block of keys stays in L1
 * while each query row goes over it); mx[r] = max_s p[r * S + s]. D: a multiple of 16, at most 128 (constant). */
static inline __attribute__((always_inline)) void scores16(const float* qr, const float* kh, int64_t n, const int64_t D,
                                                          int64_t G, int64_t S, float* p, float* mx) {
  __m512 mxv[MAX_GROUP];
  for (int64_t r = 0; r < G; ++r) mxv[r] = _mm512_set1_ps(-INFINITY);
  for (int64_t s0 = 0; s0 < n; s0 += 16) {
    const int64_t nb = n - s0 < 16 ? n - s0 : 16;
    const __mmask16 m = (__mmask16)(nb == 16 ? 0xFFFF : (1u << nb) - 1);
    for (int64_t r = 0; r < G; ++r) {
      __m512 qv[8], acc[16];
      for (int64_t i = 0; i < D / 16; ++i) qv[i] = _mm512_loadu_ps(qr + r * D + 16 * i);
      for (int j = 0; j < 16; ++j) {
        __m512 a = _mm512_setzero_ps();
        if (j < nb)
          for (int64_t i = 0; i < D / 16; ++i) a = _mm512_fmadd_ps(qv[i], _mm512_loadu_ps(kh + (s0 + j) * D + 16 * i), a);
        acc[HSUM_SLOT[j]] = a;
      }
      const __m512 sc = hsum16(acc);
      _mm512_mask_storeu_ps(p + r * S + s0, m, sc);
      mxv[r] = _mm512_mask_max_ps(mxv[r], m, mxv[r], sc);
    }
  }
  for (int64_t r = 0; r < G; ++r) mx[r] = _mm512_reduce_max_ps(mxv[r]);
}

/* acc[r * D + d] = sum_s p[r * S + s] vh[s * D + d] for s < n: 256 / D query rows per pass over the values, so
 * their sums (16 vectors) stay in registers. */
static inline __attribute__((always_inline)) void values16(const float* p, const float* vh, int64_t n, const int64_t D,
                                                          int64_t G, int64_t S, float* acc) {
  const int64_t HP = 256 / D, VD = D / 16;
  for (int64_t r0 = 0; r0 < G; r0 += HP) {
    __m512 a[16];
    for (int i = 0; i < 16; ++i) a[i] = _mm512_setzero_ps();
    for (int64_t s = 0; s < n; ++s) {
      __m512 vv[8];
      for (int64_t i = 0; i < VD; ++i) vv[i] = _mm512_loadu_ps(vh + s * D + 16 * i);
      for (int64_t h = 0; h < HP; ++h) {  /* rows past G weigh 0 */
        const __m512 w = _mm512_set1_ps(r0 + h < G ? p[(r0 + h) * S + s] : 0.0f);
        for (int64_t i = 0; i < VD; ++i) a[h * VD + i] = _mm512_fmadd_ps(w, vv[i], a[h * VD + i]);
      }
    }
    for (int64_t h = 0; h < HP && r0 + h < G; ++h)
      for (int64_t i = 0; i < VD; ++i) _mm512_storeu_ps(acc + (r0 + h) * D + 16 * i, a[h * VD + i]);
  }
}
#define VECTOR_HEAD(D) ((D) % 16 == 0 && (D) <= 128)
#else
#define VECTOR_HEAD(D) 0
#endif

/* A decoder layer's attention block for the KV heads g0 <= g < g1 (the driver splits KV heads over threads):
 *   q, k, v: rows [B, L, Hq * D] and [B, L, Hk * D] before RoPE (row strides qs/ks/vs, batch strides qb/kb/vb);
 *   kc, vc: KV caches [B, Hk, C, D] with positions 0..P-1 filled: RoPE(k) and v are written at P..P+L-1;
 *   out[b, l, h * D + d]: attention of RoPE(q) over the P + L cached positions, causal with offset `off` (row l
 *   sees keys s <= l + off), GQA (query head h reads KV head h / (Hq / Hk)).
 * The new keys are rotated straight into the cache, each query row into a scratch row (times `scale`), and
 * the output lands in the [B, L, Hq * D] layout the next matmul reads. RoPE is rotate-half with cos/sin
 * tables [L, D] for the L new positions. */
/* The block for one (batch, KV head) and its query heads h0..h1 (at most MAX_GROUP) with the head size D as a
 * parameter: called with constant D below, so gcc unrolls the dot products. The group's query heads go through
 * the keys and values together: each cached row is read once per query row, not once per head (from L2 at
 * long contexts, that read is what the kernel waits on). p: scratch for (h1 - h0) x (P + L) scores. */
static inline __attribute__((always_inline)) void block_head(
    const float* q, int64_t qs, const float* k, int64_t ks, const float* v, int64_t vs, const float* cos_t,
    const float* sin_t, float* kh, float* vh, float* out, int64_t Hq, int64_t L, const int64_t D, int64_t P,
    float scale, int64_t causal, int64_t off, int64_t h0, int64_t h1, float* p) {
  const int64_t S = P + L, G = h1 - h0;
  float qr[MAX_GROUP * MAX_HEAD_DIM], acc[MAX_GROUP * MAX_HEAD_DIM];
  for (int64_t l = 0; l < L; ++l) {
    rope_row(k + l * ks, cos_t + l * D, sin_t + l * D, D, 1.0f, kh + (P + l) * D);
    memcpy(vh + (P + l) * D, v + l * vs, sizeof(float) * D);
  }
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t r = 0; r < G; ++r)
      rope_row(q + l * qs + (h0 + r) * D, cos_t + l * D, sin_t + l * D, D, scale, qr + r * D);
    float* o = out + l * Hq * D + h0 * D;
    int64_t n = causal ? l + off + 1 : S;
    if (n > S) n = S;
    if (n <= 0) {  /* a fully masked row gives 0, as torch's safe softmax does */
      for (int64_t d = 0; d < G * D; ++d) o[d] = 0.0f;
      continue;
    }
    float mx[MAX_GROUP];
#if LUTC_ISA == 512
    if (VECTOR_HEAD(D)) {
      scores16(qr, kh, n, D, G, S, p, mx);
      for (int64_t r = 0; r < G; ++r) softmax_inplace(p + r * S, n, mx[r]);
      values16(p, vh, n, D, G, S, acc);
      memcpy(o, acc, sizeof(float) * G * D);
      continue;
    }
#endif
    for (int64_t r = 0; r < G; ++r) mx[r] = -INFINITY;
    for (int64_t s = 0; s < n; ++s) {
      const float* krow = kh + s * D;
      for (int64_t r = 0; r < G; ++r) {
        const float x = dot(qr + r * D, krow, D);
        p[r * S + s] = x;
        mx[r] = x > mx[r] ? x : mx[r];
      }
    }
    for (int64_t r = 0; r < G; ++r) softmax_inplace(p + r * S, n, mx[r]);
    for (int64_t d = 0; d < G * D; ++d) acc[d] = 0.0f;
    for (int64_t s = 0; s < n; ++s) {
      const float* vr = vh + s * D;
      for (int64_t r = 0; r < G; ++r) {
        const float w = p[r * S + s];
        float* a = acc + r * D;
        for (int64_t d = 0; d < D; ++d) a[d] += w * vr[d];
      }
    }
    memcpy(o, acc, sizeof(float) * G * D);
  }
}

int32_t lutc_rope_kv_attention_f32(const float* q, int64_t qb, int64_t qs, const float* k, int64_t kb, int64_t ks,
                                   const float* v, int64_t vb, int64_t vs, const float* cos_t, const float* sin_t,
                                   float* kc, float* vc, float* out, int64_t B, int64_t Hq, int64_t Hk, int64_t L,
                                   int64_t D, int64_t C, int64_t P, float scale, int64_t causal, int64_t off,
                                   int64_t g0, int64_t g1) {
  const int64_t rep = Hq / Hk, S = P + L, G = rep < MAX_GROUP ? rep : MAX_GROUP;
  float stack_p[MAX_STACK_KEYS];
  if (D > MAX_HEAD_DIM || D % 2) return -2;
  float* p = G * S <= MAX_STACK_KEYS ? stack_p : (float*)malloc(sizeof(float) * G * S);
  if (!p) return -1;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = g0; g < g1; ++g)
      for (int64_t h = g * rep; h < (g + 1) * rep; h += G) {  /* groups beyond MAX_GROUP heads: in slices */
        const int64_t h1 = h + G < (g + 1) * rep ? h + G : (g + 1) * rep;
#define HEAD(DIM) block_head(q + b * qb, qs, k + b * kb + g * DIM, ks, v + b * vb + g * DIM, vs, cos_t, sin_t,    \
                             kc + (b * Hk + g) * C * DIM, vc + (b * Hk + g) * C * DIM, out + b * L * Hq * DIM, Hq, L, \
                             DIM, P, scale, causal, off, h, h1, p)
        if (D == 64) HEAD(64);
        else if (D == 128) HEAD(128);
        else HEAD(D);
#undef HEAD
      }
  if (p != stack_p) free(p);
  return 0;
}

/* The attention block for prefill (L > 1 query rows), the query heads h0 <= h < h1 of every batch (the driver
 * splits query heads over threads: a model's few KV heads split unevenly). Same arguments and results as
 * lutc_rope_kv_attention_f32. Query rows go in blocks of PQ, keys in blocks of PK from a transposed copy of the KV
 * head's keys (RoPE'd, built by every task that reads the head): a query block's scores are PQ x PK
 * broadcast-FMAs per head dimension, with no horizontal sums, and each value row is read once per query block.
 * The new keys and values of a KV head are written to the cache by the task that holds the head's first query
 * head; the others read the new rows from their inputs, so no task reads what another writes. */
#define PQ 4
#define PK 32

/* kt[(s / PK) * D * PK + d * PK + s % PK] = key s of one KV head: cached rows s < P, the L new rows rotated (and
 * written to kc at P.. when `own`), zero past S up to the block edge. */
static void transposed_keys(const float* k, int64_t ks, const float* v, int64_t vs, const float* cos_t,
                            const float* sin_t, float* kc, float* vc, int64_t P, int64_t L, int64_t D, int own,
                            float* kt, float* row) {
  const int64_t S = P + L, blocks = (S + PK - 1) / PK;
  for (int64_t s = 0; s < blocks * PK; ++s) {
    const float* src = row;
    if (s < P) {
      src = kc + s * D;
    } else if (s < S) {
      const int64_t l = s - P;
      rope_row(k + l * ks, cos_t + l * D, sin_t + l * D, D, 1.0f, row);
      if (own) {
        memcpy(kc + s * D, row, sizeof(float) * D);
        memcpy(vc + s * D, v + l * vs, sizeof(float) * D);
      }
    } else {
      for (int64_t d = 0; d < D; ++d) row[d] = 0.0f;
    }
    float* dst = kt + (s / PK) * D * PK + s % PK;
    for (int64_t d = 0; d < D; ++d) dst[d * PK] = src[d];
  }
}

/* p[r * sp + s] = qr[r] . key s for the PQ rows and keys s < n (in whole blocks) */
static inline void block_scores(const float* qr, const float* kt, int64_t n, int64_t D, int64_t sp, float* p) {
  for (int64_t s0 = 0; s0 < n; s0 += PK) {
    const float* kb = kt + (s0 / PK) * D * PK;
#if LUTC_ISA == 512
    __m512 a[PQ][2];  /* 8 chains of FMAs: enough in flight for two FMA units */
    for (int r = 0; r < PQ; ++r) a[r][0] = a[r][1] = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
      const __m512 k0 = _mm512_loadu_ps(kb + d * PK), k1 = _mm512_loadu_ps(kb + d * PK + 16);
      for (int r = 0; r < PQ; ++r) {
        const __m512 q = _mm512_set1_ps(qr[r * D + d]);
        a[r][0] = _mm512_fmadd_ps(q, k0, a[r][0]);
        a[r][1] = _mm512_fmadd_ps(q, k1, a[r][1]);
      }
    }
    for (int r = 0; r < PQ; ++r) {
      _mm512_storeu_ps(p + r * sp + s0, a[r][0]);
      _mm512_storeu_ps(p + r * sp + s0 + 16, a[r][1]);
    }
#else
    float a[PQ][PK] = {{0}};
    for (int64_t d = 0; d < D; ++d)
      for (int r = 0; r < PQ; ++r) {
        const float q = qr[r * D + d];
        for (int j = 0; j < PK; ++j) a[r][j] += q * kb[d * PK + j];
      }
    for (int r = 0; r < PQ; ++r) memcpy(p + r * sp + s0, a[r], sizeof(float) * PK);
#endif
  }
}

#if LUTC_ISA == 512
/* exp_nonpos on 16 lanes (the same steps and constants) */
static inline __m512 exp16_nonpos(__m512 x) {
  const __m512i n = _mm512_cvttps_epi32(_mm512_sub_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                                      _mm512_set1_ps(0.5f)));
  const __m512 nf = _mm512_cvtepi32_ps(n);
  const __m512 f = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(nf, _mm512_set1_ps(0.693145751953125f))),
                                 _mm512_mul_ps(nf, _mm512_set1_ps(1.428606765330187e-06f)));
  __m512 e = _mm512_set1_ps(1.0f / 5040);
  e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(1.0f / 720));
  e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(1.0f / 120));
  e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(1.0f / 24));
  e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(1.0f / 6));
  e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(0.5f));
  e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(1.0f));
  e = _mm512_fmadd_ps(e, f, _mm512_set1_ps(1.0f));
  const __m512i bits = _mm512_slli_epi32(_mm512_max_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)),
                                                          _mm512_setzero_si512()), 23);
  return _mm512_mul_ps(e, _mm512_castsi512_ps(bits));
}
#endif

/* p[0..n) = softmax(p[0..n)), n > 0 */
static inline void row_softmax(float* p, int64_t n) {
#if LUTC_ISA == 512
  __m512 mx = _mm512_set1_ps(-INFINITY), sum = _mm512_setzero_ps();
  for (int64_t s = 0; s < n; s += 16) {
    const __mmask16 m = (__mmask16)(n - s >= 16 ? 0xFFFF : (1u << (n - s)) - 1);
    mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, p + s));
  }
  const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
  for (int64_t s = 0; s < n; s += 16) {
    const __mmask16 m = (__mmask16)(n - s >= 16 ? 0xFFFF : (1u << (n - s)) - 1);
    const __m512 e = exp16_nonpos(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p + s), mv));
    sum = _mm512_mask_add_ps(sum, m, sum, e);
    _mm512_mask_storeu_ps(p + s, m, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
  for (int64_t s = 0; s < n; s += 16) {
    const __mmask16 m = (__mmask16)(n - s >= 16 ? 0xFFFF : (1u << (n - s)) - 1);
    _mm512_mask_storeu_ps(p + s, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p + s), inv));
  }
#else
  float mx = -INFINITY;
  for (int64_t s = 0; s < n; ++s) mx = p[s] > mx ? p[s] : mx;
  softmax_inplace(p, n, mx);
#endif
}

/* o[r * ostride + c0 + j] = sum_{s < n} p[r * sp + s] * value s [c0 + j], j < W, for the rows r < nr */
static inline __attribute__((always_inline)) void block_values(const float* p, int64_t sp, int64_t n,
                                                              const float* vc, const float* v, int64_t vs, int64_t P,
                                                              int64_t D, int64_t c0, const int W, float* o,
                                                              int64_t ostride, int64_t nr) {
#if LUTC_ISA == 512
  if (W == 64) {
    __m512 a[PQ][4];
    for (int r = 0; r < PQ; ++r)
      for (int i = 0; i < 4; ++i) a[r][i] = _mm512_setzero_ps();
    for (int64_t s = 0; s < n; ++s) {
      const float* vr = (s < P ? vc + s * D : v + (s - P) * vs) + c0;
      const __m512 v0 = _mm512_loadu_ps(vr), v1 = _mm512_loadu_ps(vr + 16), v2 = _mm512_loadu_ps(vr + 32),
                   v3 = _mm512_loadu_ps(vr + 48);
      for (int r = 0; r < PQ; ++r) {
        const __m512 w = _mm512_set1_ps(p[r * sp + s]);
        a[r][0] = _mm512_fmadd_ps(w, v0, a[r][0]);
        a[r][1] = _mm512_fmadd_ps(w, v1, a[r][1]);
        a[r][2] = _mm512_fmadd_ps(w, v2, a[r][2]);
        a[r][3] = _mm512_fmadd_ps(w, v3, a[r][3]);
      }
    }
    for (int64_t r = 0; r < nr; ++r)
      for (int i = 0; i < 4; ++i) _mm512_storeu_ps(o + r * ostride + c0 + 16 * i, a[r][i]);
    return;
  }
#endif
  float a[PQ][64] = {{0}};
  for (int64_t s = 0; s < n; ++s) {
    const float* vr = (s < P ? vc + s * D : v + (s - P) * vs) + c0;
    for (int r = 0; r < PQ; ++r) {
      const float w = p[r * sp + s];
      for (int j = 0; j < W; ++j) a[r][j] += w * vr[j];
    }
  }
  for (int64_t r = 0; r < nr; ++r) memcpy(o + r * ostride + c0, a[r], sizeof(float) * W);
}

int32_t lutc_rope_kv_attention_prefill_f32(const float* q, int64_t qb, int64_t qs, const float* k, int64_t kb,
                                           int64_t ks, const float* v, int64_t vb, int64_t vs, const float* cos_t,
                                           const float* sin_t, float* kc, float* vc, float* out, int64_t B,
                                           int64_t Hq, int64_t Hk, int64_t L, int64_t D, int64_t C, int64_t P,
                                           float scale, int64_t causal, int64_t off, int64_t h0, int64_t h1) {
  const int64_t rep = Hq / Hk, S = P + L, sp = (S + PK - 1) / PK * PK;
  if (D > MAX_HEAD_DIM || D % 2) return -2;
  if (h0 >= h1) return 0;
  float* kt = (float*)malloc(sizeof(float) * (sp * D + PQ * sp + (PQ + 1) * D));
  if (!kt) return -1;
  float *p = kt + sp * D, *qr = p + PQ * sp, *row = qr + PQ * D;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = h0 / rep; g <= (h1 - 1) / rep; ++g) {
      const float *kg = k + b * kb + g * D, *vg = v + b * vb + g * D;
      float *kcg = kc + (b * Hk + g) * C * D, *vcg = vc + (b * Hk + g) * C * D;
      transposed_keys(kg, ks, vg, vs, cos_t, sin_t, kcg, vcg, P, L, D, g * rep >= h0, kt, row);
      const int64_t ha = g * rep > h0 ? g * rep : h0, hb = (g + 1) * rep < h1 ? (g + 1) * rep : h1;
      for (int64_t h = ha; h < hb; ++h)
        for (int64_t l0 = 0; l0 < L; l0 += PQ) {
          const int64_t nr = L - l0 < PQ ? L - l0 : PQ;
          for (int64_t r = 0; r < PQ; ++r) {
            float* qd = qr + r * D;
            if (r >= nr) {
              for (int64_t d = 0; d < D; ++d) qd[d] = 0.0f;
              continue;
            }
            const int64_t l = l0 + r;
            rope_row(q + b * qb + l * qs + h * D, cos_t + l * D, sin_t + l * D, D, scale, qd);
          }
          int64_t nmax = causal ? l0 + nr + off : S;  /* keys the block's last row sees */
          nmax = nmax > S ? S : nmax < 0 ? 0 : nmax;
          float* o = out + (b * L + l0) * Hq * D + h * D;
          block_scores(qr, kt, nmax, D, sp, p);
          for (int64_t r = 0; r < PQ; ++r) {
            float* pr = p + r * sp;
            int64_t n = r >= nr ? 0 : causal ? l0 + r + off + 1 : S;
            n = n > S ? S : n < 0 ? 0 : n;
            if (n > 0) row_softmax(pr, n);
            for (int64_t s = n; s < nmax; ++s) pr[s] = 0.0f;  /* masked keys, and rows past L: weight 0 */
          }
          /* a fully masked row (n = 0) sums no keys: 0, as torch's safe softmax gives */
          int64_t c0 = 0;
          for (; c0 + 64 <= D; c0 += 64) block_values(p, sp, nmax, vcg, vg, vs, P, D, c0, 64, o, Hq * D, nr);
          for (; c0 + 16 <= D; c0 += 16) block_values(p, sp, nmax, vcg, vg, vs, P, D, c0, 16, o, Hq * D, nr);
          for (; c0 < D; ++c0) block_values(p, sp, nmax, vcg, vg, vs, P, D, c0, 1, o, Hq * D, nr);
        }
    }
  free(kt);
  return 0;
}
