/* The float linear kernels of ops_kernels.c (a decode step's float lm_head) with float32 and float16 weights, SmolLM2's
 * 49152 x 576, interleaved, the rows evicted before each call (256 MiB streamed; pass a second argument to time them
 * warm): how much of halving the bytes the float16 kernel keeps. Build and run (from the repository root):
 *   gcc -O3 -fPIC -std=c11 -Icodegen/cpu -c codegen/cpu/ops_kernels.c -mavx512f -mavx512bw -mavx512vl -mfma -mf16c \
 *       -DLUTC_ISA=512 -o /tmp/ok.o
 *   gcc -O3 -fopenmp bench/cpu_proto/linear_f16.c /tmp/ok.o -o /tmp/linear_f16 -lm
 *   OMP_NUM_THREADS=2 /tmp/linear_f16 1        # argument: activation rows
 * Measured 2026-12-08 (Intel Xeon, Sapphire Rapids class, 2 vCPUs, L3 480 MiB), ms, float32 / float16, 7 runs:
 *   no prefetch: 2 threads 4.1-4.5 / 3.4-4.5, 1 thread 8.5-8.8 / 6.9-7.0 (warm: 7.8 / 6.6)
 *   prefetch into L2 (hint locality 2 = T1) 9 KB ahead: 2 threads 3.9-4.5 / 2.1-2.7 (two sessions of runs), 1 thread 7.6-8.1 / 4.2-4.5;
 *   4.6 KB the same, 2 KB (T0) 3.3-3.7 at 2 threads; the same prefetch in the float32 kernel: no change.
 *   AVX2 build (-mavx2 -mfma -mf16c -DLUTC_ISA=256: widened into scratch rows): 2 threads 5.6-5.9 / 4.5-4.6. */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include <omp.h>
int32_t lutc_linear_f32(const float*, int64_t, const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t);
int32_t lutc_linear_f16(const float*, int64_t, const uint16_t*, float*, int64_t, int64_t, int64_t, int64_t, int64_t);
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
int main(int argc, char** argv){
  int64_t N=49152,K=576, M=argc>1?atoi(argv[1]):1; int reps=7;
  float* w32=aligned_alloc(64,N*K*4); uint16_t* w16=aligned_alloc(64,N*K*2);
  for(int64_t i=0;i<N*K;i++){w32[i]=(float)((i*7)%13)/13.f; w16[i]=0x3c00;}
  float x[4*576], *y=malloc(4*N*4); for(int i=0;i<4*576;i++) x[i]=1.f;
  char* evict=malloc(256<<20);
  for(int r=0;r<reps;r++){
    for(int v=0;v<2;v++){
      if(argc<3) for(long i=0;i<(256<<20);i+=64) evict[i]++;
      double t=now();
      #pragma omp parallel
      { int nt=omp_get_num_threads(), id=omp_get_thread_num(); int64_t per=(N/nt+3)/4*4, n0=id*per, n1=n0+per>N?N:n0+per;
        if(v==0) lutc_linear_f32(x,576,w32,y,M,N,K,n0,n1); else lutc_linear_f16(x,576,w16,y,M,N,K,n0,n1);}
      printf("%s %.3f ms  ", v?"f16":"f32", (now()-t)*1e3);
    }
    printf("\n");
  }
}
