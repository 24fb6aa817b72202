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
  const int64_t half = D / 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t l = 0; l < L; ++l) {
        const float* xr = x + b * x0 + h * x1 + l * x2;
        const float* c = cos_t + l * D;
        const float* s = sin_t + l * D;
        float* o = out + ((b * H + h) * L + l) * D;
        for (int64_t d = 0; d < half; ++d) o[d] = xr[d] * c[d] - xr[d + half] * s[d];
        for (int64_t d = half; d < D; ++d) o[d] = xr[d] * c[d] + xr[d - half] * s[d];
      }
  return 0;
}

/* out = silu(gate) * up over n contiguous elements. */
int32_t lutc_swiglu_f32(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
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
  const int64_t half = D / 2, S = P + L, G = h1 - h0;
  float qr[MAX_GROUP * MAX_HEAD_DIM], acc[MAX_GROUP * MAX_HEAD_DIM];
  for (int64_t l = 0; l < L; ++l) {
    const float *kr = k + l * ks, *c = cos_t + l * D, *sn = sin_t + l * D;
    float* dst = kh + (P + l) * D;
    for (int64_t d = 0; d < half; ++d) dst[d] = kr[d] * c[d] - kr[d + half] * sn[d];
    for (int64_t d = half; d < D; ++d) dst[d] = kr[d] * c[d] + kr[d - half] * sn[d];
    memcpy(vh + (P + l) * D, v + l * vs, sizeof(float) * D);
  }
  for (int64_t l = 0; l < L; ++l) {
    const float *c = cos_t + l * D, *sn = sin_t + l * D;
    for (int64_t r = 0; r < G; ++r) {
      const float* xr = q + l * qs + (h0 + r) * D;
      float* qd = qr + r * D;
      for (int64_t d = 0; d < half; ++d) qd[d] = (xr[d] * c[d] - xr[d + half] * sn[d]) * scale;
      for (int64_t d = half; d < D; ++d) qd[d] = (xr[d] * c[d] + xr[d - half] * sn[d]) * scale;
    }
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
