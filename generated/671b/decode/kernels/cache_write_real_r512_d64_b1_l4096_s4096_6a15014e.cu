// dsv3c generated kernel cache_write_real_r512_d64_b1_l4096_s4096_6a15014e.cu — do not edit: `dsv3c compile` writes it.
// op: CacheWrite
//   cache[b * LEN + positions[b] + t % PER_SEQ] = (ckv[t], kva[t][KVR..KVR + ROPE])
// specialized for: BATCH=1 LEN=4096 KVR=512 ROPE=64 PER_SEQ=4096 TILE=1 GROUPS=0 KVA_STRIDE=576
// arguments ((w) overwritten, (+) accumulated, (rw) in place): positions i32, ckv bf16, kva bf16,
//   latent bf16 (rw), rope bf16 (rw)
// launches, in order:
//   cache_write<<<(4096, 1, 1), 128, 0>>>  static smem 0 B

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
typedef i32 T0;  // positions
typedef bf16 T1;  // ckv
typedef bf16 T2;  // kva
typedef bf16 T3;  // latent
typedef bf16 T4;  // rope
constexpr int BATCH = 1;
constexpr int LEN = 4096;
constexpr int KVR = 512;
constexpr int ROPE = 64;
constexpr int PER_SEQ = 4096;
constexpr int TILE = 1;
constexpr int GROUPS = 0;
constexpr int KVA_STRIDE = 576;
constexpr int CACHE_WRITE_THREADS = 128;

// The f32 value of an E4M3 byte (sign, 4 exponent bits biased by 7, 3 mantissa bits; exponent 0 is
// subnormal, m * 2^-9; S.1111.111 is NaN), decoded in integer arithmetic.
__device__ __forceinline__ float from_e4m3(u8 b) {
  const u32 s = (u32)(b & 0x80) << 24, e = (b >> 3) & 0xf, m = b & 7;
  if (e == 15 && m == 7) return __int_as_float(0x7fc00000);
  if (e == 0) return s ? -(float)m * 0.001953125f : (float)m * 0.001953125f;
  return __uint_as_float(s | ((e + 120) << 23) | (m << 20));
}
// ---- the latent KV cache ----
// The cache row of new token t (of PER_SEQ per sequence) and whether it lies in the cache.
__device__ __forceinline__ i64 cache_row(const T0* positions, i64 t, bool* in_cache) {
  const i64 b = t / PER_SEQ;
  const i64 p = (i64)as_index(positions[b]) + t % PER_SEQ;
  *in_cache = p >= 0 && p < LEN;
  return b * LEN + p;
}

// Appends the new tokens' latents to the cache, a block per new token: the normalized latent
// ckv[t] (KVR values) and the roped key kva[t * KVA_STRIDE + KVR ..][..ROPE] go to cache row
// b * LEN + positions[b] + t % PER_SEQ (not stored past the cache's end).
extern "C" __global__ void __launch_bounds__(CACHE_WRITE_THREADS) cache_write(const T0* __restrict__ positions,
                                                                              const T1* __restrict__ ckv,
                                                                              const T2* __restrict__ kva,
                                                                              T3* __restrict__ latent,
                                                                              T4* __restrict__ rope) {
  const i64 t = blockIdx.x;
  bool in_cache;
  const i64 row = cache_row(positions, t, &in_cache);
  if (!in_cache) return;
  for (int c = threadIdx.x; c < KVR; c += blockDim.x) latent[row * KVR + c] = (float)ckv[t * KVR + c];
  for (int c = threadIdx.x; c < ROPE; c += blockDim.x) rope[row * ROPE + c] = (float)kva[t * KVA_STRIDE + KVR + c];
}
