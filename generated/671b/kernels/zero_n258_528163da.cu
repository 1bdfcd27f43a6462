// dsv3c generated kernel zero_n258_528163da.cu — do not edit: `dsv3c compile` writes it.
// op: Zero
//   x = 0
// specialized for: N=258
// arguments (f32 arena slices; (w) overwritten, (+) accumulated, (rw) in place): x (w)
// launches, in order:
//   zero<<<(2, 1, 1), 256, 0>>>  static smem 0 B

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

// Integers (token ids, expert indices, row numbers) are stored in the f32 arenas.
__device__ __forceinline__ i32 as_index(float v) { return (i32)v; }
// An expert id: truncated toward zero and clamped to [0, experts), NaN to 0 (cvt.rzi's rule) — the CPU's
// `expert_index`, so an id the router never writes reads the same expert on both backends.
__device__ __forceinline__ i32 expert_index(float v, i32 experts) {
  const i32 e = (i32)v;
  return e < 0 ? 0 : (e < experts ? e : experts - 1);
}

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
constexpr int N = 258;

// x[i] = 0 for i < N.
extern "C" __global__ void __launch_bounds__(256) zero(float* __restrict__ x) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) x[i] = 0.0f;
}
