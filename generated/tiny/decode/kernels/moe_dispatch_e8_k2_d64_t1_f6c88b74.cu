// dsv3c generated kernel moe_dispatch_e8_k2_d64_t1_f6c88b74.cu — do not edit: `dsv3c compile` writes it.
// op: Dispatch
//   rows sorted by expert, stable in (token, slot) order: perm[row] = pair, inv[pair] = row;
//   offsets[e] = first row of expert e (written on the device); xp[row] = x[perm[row] / top_k]
// specialized for: TOKENS=1 EXPERTS=8 TOP_K=2 D=64 N=2
// arguments ((w) overwritten, (+) accumulated, (rw) in place): idx i32, x f32, perm i32 (w), inv i32 (w),
//   offsets i32 (w), xp f32 (w)
// launches, in order:
//   dispatch_count<<<(8, 1, 1), 256, 0>>>  static smem 132 B
//   dispatch_scan<<<(1, 1, 1), 32, 0>>>  static smem 0 B
//   dispatch_place<<<(8, 1, 1), 256, 0>>>  static smem 32 B
//   dispatch_gather<<<(2, 1, 1), 128, 0>>>  static smem 0 B

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
typedef i32 T0;  // idx
typedef float T1;  // x
typedef i32 T2;  // perm
typedef i32 T3;  // inv
typedef i32 T4;  // offsets
typedef float T5;  // xp
constexpr int TOKENS = 1;
constexpr int EXPERTS = 8;
constexpr int TOP_K = 2;
constexpr int D = 64;
constexpr int N = 2;
constexpr int DISPATCH_COUNT_THREADS = 256;
constexpr int DISPATCH_SCAN_THREADS = 32;
constexpr int DISPATCH_PLACE_THREADS = 256;
constexpr int DISPATCH_GATHER_THREADS = 128;

// Dispatch: sort the N = TOKENS * TOP_K (token, slot) pairs by expert, stably in pair order, and gather
// their inputs. Four launches: count (a block per expert), scan (offsets), place (a block per expert
// walks the pairs in order, ranks its matches with warp ballots: stable, no atomics), gather.
// perm[row] = pair, inv[pair] = row, offsets[e] = first row of expert e (offsets[EXPERTS] = N).
__device__ __forceinline__ int expert_of(const i32* idx, i64 k) { return expert_index(idx[k], EXPERTS); }

extern "C" __global__ void __launch_bounds__(DISPATCH_COUNT_THREADS) dispatch_count(const T0* __restrict__ idx,
                                                                const T1* __restrict__ x,
                                                                T2* __restrict__ perm, T3* __restrict__ inv,
                                                                T4* __restrict__ offsets, T5* __restrict__ xp) {
  __shared__ float scratch[33];
  const int e = blockIdx.x;
  float n = 0.0f;
  for (i64 k = threadIdx.x; k < N; k += 256) n += expert_of(idx, k) == e ? 1.0f : 0.0f;
  n = block_sum(n, scratch);  // exact: counts stay below 2^24
  if (threadIdx.x == 0) {
    offsets[e + 1] = n;
    if (e == 0) offsets[0] = 0.0f;
  }
}

extern "C" __global__ void __launch_bounds__(DISPATCH_SCAN_THREADS) dispatch_scan(const T0* __restrict__ idx, const T1* __restrict__ x,
                                         T2* __restrict__ perm, T3* __restrict__ inv,
                                         T4* __restrict__ offsets, T5* __restrict__ xp) {
  if (threadIdx.x != 0) return;
  float run = 0.0f;
  for (int e = 0; e <= EXPERTS; ++e) {
    run += offsets[e];
    offsets[e] = run;
  }
}

extern "C" __global__ void __launch_bounds__(DISPATCH_PLACE_THREADS) dispatch_place(const T0* __restrict__ idx,
                                                                const T1* __restrict__ x,
                                                                T2* __restrict__ perm, T3* __restrict__ inv,
                                                                T4* __restrict__ offsets, T5* __restrict__ xp) {
  __shared__ int warp_n[8];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int e = blockIdx.x;
  int next = as_index(offsets[e]);
  for (i64 k0 = 0; k0 < N; k0 += 256) {
    const i64 k = k0 + threadIdx.x;
    const bool hit = k < N && expert_of(idx, k) == e;
    const unsigned ballot = __ballot_sync(0xffffffffu, hit);
    if (lane == 0) warp_n[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, total = 0;
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      before += w < warp ? warp_n[w] : 0;
      total += warp_n[w];
    }
    if (hit) {
      const int row = next + before + __popc(ballot & ((1u << lane) - 1u));
      perm[row] = (float)k;
      inv[k] = (float)row;
    }
    next += total;
    __syncthreads();
  }
}

extern "C" __global__ void __launch_bounds__(DISPATCH_GATHER_THREADS) dispatch_gather(const T0* __restrict__ idx,
                                                                 const T1* __restrict__ x,
                                                                 T2* __restrict__ perm,
                                                                 T3* __restrict__ inv,
                                                                 T4* __restrict__ offsets,
                                                                 T5* __restrict__ xp) {
  const i64 row = blockIdx.x;
  const i64 t = (i64)as_index(perm[row]) / TOP_K;
  for (int c = threadIdx.x; c < D; c += blockDim.x) xp[row * D + c] = x[t * D + c];
}
