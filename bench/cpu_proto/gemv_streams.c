/* The CPU LUT GEMV (codegen/cpu/lut_kernels.c, AVX-512) reading 1, 2 and 4 weight tiles per pass (its `tiles`
 * knob) against plain reads of the same bytes with 2, 4 and 8 streams per thread, interleaved in one process, cold
 * weights (>= 512 MiB of copies), medians: how close the kernel streams to what its access pattern can. Build and
 * run (from the repository root):
 *   gcc -O3 -fPIC -std=c11 -Icodegen/cpu -c codegen/cpu/lut_kernels.c -mavx512f -mavx512bw -mavx512vl -mfma \
 *       -mf16c -DLUTC_ISA=512 -o /tmp/lk.o
 *   gcc -O3 -march=native -fopenmp bench/cpu_proto/gemv_streams.c /tmp/lk.o -o /tmp/gemv_streams -lm
 *   OMP_NUM_THREADS=2 OMP_PROC_BIND=spread /tmp/gemv_streams 4096 4096 2 400
 * Arguments: N K bits reps. Measured 2026-12-03 (Sapphire Rapids, 2 vCPUs, noisy), W2 4096x4096, us, 1 / 2
 * threads: kernel reading 2 tiles per pass 328 / 232, 4 tiles 292 / 211, 8 tiles 305 / 213; plain reads with
 * 8 streams 291 / 196. W4 4096x4096: 2 tiles 1016 / 474, 4 tiles 926 / 438, plain 8 streams 832 / 387.
 * Measured 2026-12-04 (AMD EPYC Zen 4, 2 vCPUs, noisy), us, 1 / 2 threads, tiles 4 / 2 / 1, with the weights
 * prefetched into L1 (_MM_HINT_T0, as until then):
 *   W2 4096x4096   309-315 / 209-224 / 238-246,  169-250 / 139-182 / 142-195  (plain 2 streams 184 / 97)
 *   W4 4096x4096   547 / 361 / 403,  345 / 278 / 275
 *   W3 4096x4096   404 / 329 / 363,  265 / 217 / 221
 *   W2 11008x4096  709 / 521 / 595,  467 / 391 / 396
 * and swinging between ~210 and ~300 us at W2 4096x4096 with small changes of the loop (vpermb for the lookups,
 * a longer prefetch distance); into L2 (_MM_HINT_T1), in one later run (plain reads ~20% slower than above):
 *   W2 4096x4096   214 / 238 / 282,  156 / 161 / 167  (plain 2 streams 229 / 156)
 *   W4 4096x4096   414 / 419 / 469,  304 / 312 / 308  (plain 398 / 295)
 *   W2 11008x4096  519 / 607 / 706,  387 / 389 / 412  (plain 546 / 389)
 *   W3 11008x4096  792 / 886 / 1076, 573 / 596 / 636  (plain 780 / 556; T0 at 4 tiles: 1368 / 856)
 * so the kernel prefetches into L2 and reads 4 tiles per pass, at 93-107% of a plain read of the same bytes.
 * Transparent huge pages (madvise) for the weights: within 2% (W2).
 * The AVX2 build (lut_kernels.c with -mavx2 -mfma -mf16c -DLUTC_ISA=256, this file with -mavx2 -mfma -mf16c instead
 * of -march=native) reads 2 tiles per pass at most (W1/W2/ternary; 1 for W3/W4). avx2_two_tile_w4.patch gives
 * W3/W4 a two-tile pass (one int16 sum per tile, the pairs weighted (1, 2) and (4, 8) by vpmaddubsw, int32 sums in
 * L1 every 16 runs): measured 2026-12-07 on an Intel Xeon with AVX-512 (AVX2 build), W4, us, tiles 2 / 1:
 *   4096x4096 1 thread 639 / 632 (plain 4 streams 517); 11008x4096 1 thread 1691-1710 / 1652-1663 (plain 1401-1436),
 *   2 threads 846-863 / 843-865 (plain 709-715)
 * no gain, so it is not in lut_kernels.c (nor were its outputs checked: this harness times, it does not compare);
 * its motivation, AMD Zen 3 (W4 at 79% of a cold read), was not measured.
 * Prefetch distance and hint (PREFETCH_RUNS and the _mm_prefetch hint in lut_kernels.c set by hand), 2026-12-08,
 * Intel Xeon with AVX-512 + AMX, W2 4096x4096, 2 threads, two interleaved sweeps, us (plain 4 streams in the same
 * run): T1 at 16 runs 172 / 172 (148 / 146), 32 169 / - (145), 64 187 (155), 128 188 / 167 (155 / 140); T0 at 32
 * 167 / 160 (144 / 136); NTA at 32 350 / 347 (157 / 159). T0/T1 at 16-128 runs all read at 84-88% of a plain read
 * (noise); NTA halves the speed. The shipped T1 at 32 stays.
 * 2026-12-08 again (same host kind; PREFETCH_RUNS now settable with -DPREFETCH_RUNS=), 1 / 2 threads, 4 tiles per pass,
 * us: 32 runs 306-308 / 161-165, 96 runs 313 / 162, 160 runs 312 / 165; one tile per pass gains with distance
 * (362-369 -> 342 / 193-197 -> 179) but stays behind 4 tiles. (The float16 linear kernel of ops_kernels.c, one row
 * stream per weight row, went 3.4 -> 2.3 ms with a 9 KB prefetch; the LUT GEMV's 4 tiles per pass do not need it.) */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef __AVX512F__
#define ISA_SYM(name) name##_avx512
#else /* the AVX2 build (lut_kernels.c with -DLUTC_ISA=256, this file with -mavx2 or -march=native on AVX2 hosts) */
#define ISA_SYM(name) name##_avx2
#endif
#define lutc_gemv ISA_SYM(lutc_gemv)
#define lutc_precompute ISA_SYM(lutc_precompute)
int32_t lutc_gemv(const int8_t* tables, const float* tscale, const float* xsum, const uint8_t* w,
                         const uint16_t* s, const int8_t* z, float* y, int64_t m, int64_t n_pad, int64_t runs,
                         int64_t groups, int64_t bits, int64_t tile0, int64_t tile1, int64_t row0, int64_t row1,
                         int64_t rows, int64_t mblock, int64_t tiles);
int32_t lutc_precompute(const float* x, int64_t k, int64_t k_pad, int64_t group, int8_t* tables,
                               float* tscale, float* xsum);

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}
static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

/* plain read of a thread's share of w in `ns` streams, then of its scales and zeros */
static long long plain_read(const uint8_t* w, long wbytes, const uint8_t* s, long sbytes, const uint8_t* z,
                            long zbytes, int ns) {
  long long sink = 0;
#pragma omp parallel reduction(+ : sink)
  {
    int nt = omp_get_num_threads(), id = omp_get_thread_num();
    long per = wbytes / nt, q = per / ns / 64 * 64;
    const uint8_t* p = w + id * per;
#ifdef __AVX512F__
    __m512i a = _mm512_setzero_si512();
#define LOAD_ADD(ptr) a = _mm512_add_epi64(a, _mm512_load_si512(ptr))
#else
    __m256i a = _mm256_setzero_si256();
#define LOAD_ADD(ptr) a = _mm256_add_epi64(a, _mm256_add_epi64(_mm256_load_si256((const __m256i*)(ptr)), \
                                                                 _mm256_load_si256((const __m256i*)(ptr) + 1)))
#endif
    for (long i = 0; i < q; i += 64)
      for (int u = 0; u < ns; u++) {
        _mm_prefetch((const char*)p + u * q + i + 2048, _MM_HINT_T0);
        LOAD_ADD(p + u * q + i);
      }
    for (long i = id * (sbytes / nt); i < (id + 1) * (sbytes / nt); i += 64) LOAD_ADD(s + i);
    for (long i = id * (zbytes / nt); i < (id + 1) * (zbytes / nt); i += 64) LOAD_ADD(z + i);
#ifdef __AVX512F__
    sink += _mm512_reduce_add_epi64(a);
#else
    long long lanes[4];
    _mm256_storeu_si256((__m256i*)lanes, a);
    sink += lanes[0] + lanes[1] + lanes[2] + lanes[3];
#endif
#undef LOAD_ADD
  }
  return sink;
}

int main(int argc, char** argv) {
  if (argc < 5) return fprintf(stderr, "usage: %s N K bits reps\n", argv[0]), 2;
  const long n = atol(argv[1]), k = atol(argv[2]), bits = atol(argv[3]);
  const int reps = atoi(argv[4]);
  const long runs = k / 4, groups = k / 128, tiles = n / 64, tb = runs * (bits / 2 * 64 + (bits & 1) * 32);
  const long wbytes = tiles * tb, sbytes = tiles * groups * 64 * 2, zbytes = tiles * groups * 64;
  const int copies = (int)((512L << 20) / (wbytes + sbytes + zbytes)) + 1;
  uint8_t **W = malloc(copies * sizeof *W), **S = malloc(copies * sizeof *S), **Z = malloc(copies * sizeof *Z);
  for (int c = 0; c < copies; c++) {
    W[c] = aligned_alloc(64, wbytes), S[c] = aligned_alloc(64, sbytes), Z[c] = aligned_alloc(64, zbytes);
    for (long i = 0; i < wbytes; i++) W[c][i] = (uint8_t)rand();
    for (long i = 0; i < sbytes / 2; i++) ((uint16_t*)S[c])[i] = 0x3c00; /* 1.0 */
    memset(Z[c], 1, zbytes);
  }
  float* x = aligned_alloc(64, k * 4);
  for (long i = 0; i < k; i++) x[i] = rand() / (float)RAND_MAX - 0.5f;
  int8_t* tab = aligned_alloc(64, runs * 16);
  float *ts = aligned_alloc(64, groups * 4), *xs = aligned_alloc(64, groups * 4), *y = aligned_alloc(64, n * 4);
  const char* names[] = {"lutc_gemv, 4 tiles/pass", "lutc_gemv, 2 tiles/pass", "lutc_gemv, 1 tile/pass",
                         "plain read, 2 streams", "plain read, 4 streams", "plain read, 8 streams"};
  const int tpp[] = {4, 2, 1, 0, 0, 0}, streams[] = {0, 0, 0, 2, 4, 8}, nm = 6;
  double* t = malloc(nm * reps * sizeof *t);
  long long sink = 0;
  for (int r = 0; r < reps; r++)
    for (int mi = 0; mi < nm; mi++) {
      const int c = (r * nm + mi) % copies;
      const double t0 = now();
      if (tpp[mi]) {
        lutc_precompute(x, k, k, 128, tab, ts, xs);
#pragma omp parallel
        {
          const int nt = omp_get_num_threads(), id = omp_get_thread_num();
          const long per = (tiles + nt - 1) / nt, a = id * per, b = a + per < tiles ? a + per : tiles;
          lutc_gemv(tab, ts, xs, W[c], (uint16_t*)S[c], (int8_t*)Z[c], y, 1, n, runs, groups, bits, a, b, 0,
                           1, 4, 0, tpp[mi]);
        }
      } else {
        sink += plain_read(W[c], wbytes, S[c], sbytes, Z[c], zbytes, streams[mi]);
      }
      t[mi * reps + r] = now() - t0;
    }
  for (int mi = 0; mi < nm; mi++) {
    qsort(t + mi * reps, reps, sizeof *t, cmp);
    const double med = t[mi * reps + reps / 2];
    printf("%-24s N %ld K %ld W%ld, %d threads: median %7.1f us, %.2f GB/s\n", names[mi], n, k, bits,
           omp_get_max_threads(), med * 1e6, (wbytes + sbytes + zbytes) / med / 1e9);
  }
  return (int)(sink & 0) + (y[0] != y[0]); /* keep the sums; a NaN output fails */
}
