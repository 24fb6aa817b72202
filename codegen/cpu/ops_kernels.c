/* The non-LUT ops of a decoder layer as C micro-kernels, driven by TVM-generated entry points (ops.py):
 * attention (GQA, causal top-left or bottom-right aligned), RoPE (rotate-half), SwiGLU. Inputs may be strided
 * views (TVM passes the DLPack strides; the innermost stride must be 1), outputs are contiguous. One source for
 * every ISA: plain loops that gcc vectorizes for the flags it is given. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define MAX_STACK_KEYS 4096

/* 16 partial sums: gcc vectorizes this without -ffast-math (a plain reduction it would keep scalar) */
static inline float dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  float s = 0.0f;
  for (; i < n; ++i) s += a[i] * b[i];
  for (int j = 0; j < 16; ++j) s += acc[j];
  return s;
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
          if (p[s] > mx) mx = p[s];
        }
        float tot = 0.0f;
        for (int64_t s = 0; s < n; ++s) {
          p[s] = expf(p[s] - mx);
          tot += p[s];
        }
        const float inv = 1.0f / tot;
        for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
        for (int64_t s = 0; s < n; ++s) {
          const float* vs = vh + s * v2;
          const float w = p[s] * inv;
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
