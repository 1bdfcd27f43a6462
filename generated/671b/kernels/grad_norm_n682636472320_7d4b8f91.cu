// dsv3c generated kernel grad_norm_n682636472320_7d4b8f91.cu — do not edit: `dsv3c compile` writes it.
// op: global gradient norm
//   partials[c] = sum over chunk c of g^2 (f64, stored f32); norm = sqrt(sum_c partials[c])
// specialized for: N=682636472320 CHUNK=16384 CHUNKS=41664824
// arguments ((w) overwritten, (+) accumulated, (rw) in place): grad f32, partials f32 (w), norm f32 (w)
// launches, in order:
//   grad_norm_partials<<<(41664824, 1, 1), 256, 0>>>  static smem 264 B
//   grad_norm_finish<<<(1, 1, 1), 1024, 0>>>  static smem 264 B

// ---- prelude: fixed-width types and helpers (NVRTC has no <stdint.h>) ----
typedef signed char i8;
typedef unsigned char u8;
typedef short i16;
typedef unsigned short u16;
typedef int i32;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

#define NEG_INF (__int_as_float(0xff800000))

// bfloat16 storage: reads widen exactly to f32, writes round to nearest-even (NaN stays a quiet NaN).
// Kernels compute in f32; an argument stored as bf16 (its parameter type `Tn` is `bf16`) converts on
// every load and store, so one kernel body serves every storage dtype.
struct bf16 {
  u16 bits;
  __device__ __forceinline__ operator float() const { return __uint_as_float((u32)bits << 16); }
  __device__ __forceinline__ bf16& operator=(float v) {
    u16 h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
    bits = h;
    return *this;
  }
  __device__ __forceinline__ bf16& operator+=(float v) { return *this = (float)*this + v; }
  __device__ __forceinline__ bf16& operator-=(float v) { return *this = (float)*this - v; }
  __device__ __forceinline__ bf16& operator*=(float v) { return *this = (float)*this * v; }
};

// FP8 E4M3 storage (a quantized GEMM operand; its f32 scales are a separate argument). No conversions:
// only the FP8 GEMM cores read it, moving the bytes straight to the tensor cores.
struct e4m3 {
  u8 bits;
};
template <typename T>
struct is_e4m3 {
  static constexpr bool value = false;
};
template <>
struct is_e4m3<e4m3> {
  static constexpr bool value = true;
};

// DeepSeek-V3's fine-grained scaling: a group's scale from its amax (floored at 1e-4), and the E4M3 byte
// of x (already divided by its scale) rounded to nearest-even and saturated to +-448.
__device__ __forceinline__ float fp8_scale(float amax) { return fmaxf(amax, 1e-4f) / 448.0f; }
__device__ __forceinline__ u8 to_e4m3(float x) {
  u16 h;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(h) : "f"(0.0f), "f"(x));
  return (u8)(h & 0xff);
}

// Integers (token ids, expert indices, permutations, offsets) are stored as i32.
__device__ __forceinline__ i32 as_index(i32 v) { return v; }
// An expert id clamped to [0, experts) — the CPU's `expert_index`, so an id the router never writes
// reads the same expert on both backends.
__device__ __forceinline__ i32 expert_index(i32 e, i32 experts) { return e < 0 ? 0 : (e < experts ? e : experts - 1); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over a block of `blockDim.x` threads (a multiple of 32, at most 1024), the same value in
// every thread. Fixed reduction order: deterministic.
__device__ __forceinline__ float block_sum(float v, float* scratch /* [33] */) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < warps ? scratch[lane] : 0.0f;
  t = warp_sum(t);
  return t;
}

__device__ __forceinline__ double block_sum_f64(double v, double* scratch /* [33] */) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum_f64(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double t = lane < warps ? scratch[lane] : 0.0;
  t = warp_sum_f64(t);
  return t;
}

__device__ __forceinline__ float block_max(float v, float* scratch /* [33] */) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < warps ? scratch[lane] : NEG_INF;
  t = warp_max(t);
  return t;
}

// ---- specialization ----
typedef float T0;  // grad
typedef float T1;  // partials
typedef float T2;  // norm
constexpr i64 N = 682636472320LL;
constexpr int CHUNK = 16384;
constexpr int CHUNKS = 41664824;
constexpr int GRAD_NORM_PARTIALS_THREADS = 256;
constexpr int GRAD_NORM_FINISH_THREADS = 1024;

// Sums of squares by chunk, and a sum of such partial sums, deterministic (f64 sums in a fixed order,
// whatever the grid): the two halves of the global gradient norm (grad_norm), which a parallel job runs
// apart (sum_squares, sum_parts) to add the partials of other ranks' parameters in between.

// Block c: partials[c] = sum over chunk c (CHUNK elements of n) of x^2, summed in f64, stored f32.
template <typename X, typename P>
__device__ __forceinline__ void chunk_sum_squares(const X* __restrict__ x, P* __restrict__ partials, i64 n,
                                                  double* scratch /* [33] */) {
  const i64 base = (i64)blockIdx.x * CHUNK;
  double s = 0.0;
  for (i64 i = base + threadIdx.x; i < base + CHUNK && i < n; i += blockDim.x) s += (double)x[i] * (double)x[i];
  s = block_sum_f64(s, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = (float)s;
}

// The sum of PARTS partials (f64), on one block of 1024 threads: thread t sums a contiguous run, then the
// block sums the runs in thread order. Every thread gets the total.
template <i64 PARTS, typename P>
__device__ __forceinline__ double sum_of_parts(const P* __restrict__ partials, double* scratch /* [33] */) {
  constexpr i64 PER = (PARTS + 1023) / 1024;
  double s = 0.0;
  for (i64 c = threadIdx.x * PER; c < (threadIdx.x + 1) * PER && c < PARTS; ++c) s += (double)partials[c];
  return block_sum_f64(s, scratch);
}

// The global gradient norm over N elements, deterministic:
//   grad_norm_partials: block c sums g^2 (f64) over chunk c of CHUNK elements; partials[c] = the sum (f32);
//   grad_norm_finish:   one block sums the partials (f64) in a fixed order; norm[0] = sqrt of the total.
extern "C" __global__ void __launch_bounds__(GRAD_NORM_PARTIALS_THREADS) grad_norm_partials(const T0* __restrict__ grad,
                                                                    T1* __restrict__ partials,
                                                                    T2* __restrict__ norm) {
  __shared__ double scratch[33];
  chunk_sum_squares(grad, partials, N, scratch);
}

extern "C" __global__ void __launch_bounds__(GRAD_NORM_FINISH_THREADS) grad_norm_finish(const T0* __restrict__ grad,
                                                                   T1* __restrict__ partials,
                                                                   T2* __restrict__ norm) {
  __shared__ double scratch[33];
  const double s = sum_of_parts<CHUNKS>(partials, scratch);
  if (threadIdx.x == 0) norm[0] = (float)sqrt(s);
}
