// dsv3c generated kernel rope_at_h4_d8_t256_s256_1f7a1fee.cu — do not edit: `dsv3c compile` writes it.
// op: RopeAt
//   in place: (x[2i], x[2i+1]) -> ([i], [dim/2 + i]) rotated by pos * inv_freq[i] (HF layout)
//   pos = positions[t / PER_SEQ] + t % PER_SEQ
//   theta = 10000, attention factor 1
// specialized for: TOKENS=256 PER_SEQ=256 HEADS=4 ROW_STRIDE=96 HEAD_STRIDE=24 OFFSET=16 DIM=8 HALF=4
//   ATTENTION_FACTOR=1.0
// arguments ((w) overwritten, (+) accumulated, (rw) in place): positions i32, x f32 (rw)
// launches, in order:
//   rope_at<<<(256, 1, 1), 128, 0>>>  static smem 128 B

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
typedef float T1;  // x
constexpr int TOKENS = 256;
constexpr int PER_SEQ = 256;
constexpr int HEADS = 4;
constexpr int ROW_STRIDE = 96;
constexpr int HEAD_STRIDE = 24;
constexpr int OFFSET = 16;
constexpr int DIM = 8;
constexpr int HALF = 4;
constexpr float ATTENTION_FACTOR = 1.0f;
__constant__ float INV_FREQ[4] = {
    1.0f, 0.1f, 0.01f, 0.001f,
};
constexpr int ROPE_AT_THREADS = 128;

// Rotates one token's heads in place: pairs (x[2i], x[2i+1]) of each head's DIM channels at OFFSET turn by
// pos * INV_FREQ[i] and land at [i] and [DIM/2 + i] (HF's layout); INV applies the transpose (the backward).
// cos and sin are scaled by ATTENTION_FACTOR (YaRN's mscale ratio). `buf` holds HEADS * DIM floats.
template <class T, bool INV>
__device__ __forceinline__ void rope_token(T* row, float pos, float* buf) {
  for (int e = threadIdx.x; e < HEADS * DIM; e += blockDim.x)
    buf[e] = row[(e / DIM) * HEAD_STRIDE + OFFSET + e % DIM];
  __syncthreads();
  for (int e = threadIdx.x; e < HEADS * HALF; e += blockDim.x) {
    const int h = e / HALF, i = e % HALF;
    const float theta = pos * INV_FREQ[i];
    const float c = cosf(theta) * ATTENTION_FACTOR, s = sinf(theta) * ATTENTION_FACTOR;
    T* v = row + h * HEAD_STRIDE + OFFSET;
    const float* src = buf + h * DIM;
    if (INV) {
      const float a = src[i], b = src[HALF + i];
      v[2 * i] = a * c + b * s;
      v[2 * i + 1] = b * c - a * s;
    } else {
      const float ev = src[2 * i], od = src[2 * i + 1];
      v[i] = ev * c - od * s;
      v[HALF + i] = od * c + ev * s;
    }
  }
}

// Rotary embedding in place at given positions, one block per token: token t sits at
// positions[t / PER_SEQ] + t % PER_SEQ (a decode step's sequences each resume where their cache ends).
extern "C" __global__ void __launch_bounds__(ROPE_AT_THREADS) rope_at(const T0* __restrict__ positions,
                                                                      T1* __restrict__ x) {
  __shared__ float buf[HEADS * DIM];
  const i64 t = blockIdx.x;
  const float pos = (float)(as_index(positions[t / PER_SEQ]) + (i32)(t % PER_SEQ));
  rope_token<T1, false>(x + t * ROW_STRIDE, pos, buf);
}
