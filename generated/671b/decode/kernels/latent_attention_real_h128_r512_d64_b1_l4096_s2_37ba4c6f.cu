// dsv3c generated kernel latent_attention_real_h128_r512_d64_b1_l4096_s2_37ba4c6f.cu — do not edit: `dsv3c compile` writes it.
// op: LatentAttention
//   o_lat[t, h] = sum_{j <= p} softmax_j(scale * (q_lat[t, h] . c_j + q_pe[t, h] . k_pe_j)) c_j, p = positions[b] + t % PER_SEQ
//   a block per (8 heads, new token), 128 threads; 13 cache rows per tile, loaded once for the 8 heads
// specialized for: BATCH=1 LEN=4096 KVR=512 ROPE=64 PER_SEQ=2 TILE=1 GROUPS=0 HEADS=128 HG=8 NOPE=128 DQK=192
//   KS=577 BK=13 PER=32 WINDOW=0 SINKS=0 SCALE=0.13523377
// arguments ((w) overwritten, (+) accumulated, (rw) in place): positions i32, q_lat bf16, q bf16,
//   latent bf16, rope bf16, o_lat bf16 (w)
// launches, in order:
//   latent_attention<<<(16, 2, 1), 128, 0>>>  static smem 48980 B

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
typedef bf16 T1;  // q_lat
typedef bf16 T2;  // q
typedef bf16 T3;  // latent
typedef bf16 T4;  // rope
typedef bf16 T5;  // o_lat
constexpr int BATCH = 1;
constexpr int LEN = 4096;
constexpr int KVR = 512;
constexpr int ROPE = 64;
constexpr int PER_SEQ = 2;
constexpr int TILE = 1;
constexpr int GROUPS = 0;
constexpr int HEADS = 128;
constexpr int HG = 8;
constexpr int NOPE = 128;
constexpr int DQK = 192;
constexpr int KS = 577;
constexpr int BK = 13;
constexpr int PER = 32;
constexpr int WINDOW = 0;
constexpr int SINKS = 0;
constexpr float SCALE = 0.13523377f;
constexpr int LATENT_ATTENTION_THREADS = 128;

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

// MLA decode attention in the absorbed form, FlashMLA's problem shape: many heads, few query tokens, one
// long latent shared by every head. A block per (group of HG heads, new token): the group's absorbed
// queries [q_lat ; q_pe] sit in shared memory, the sequence's cache rows stream through it BK at a time
// (loaded once for all HG heads), with an online softmax (running max m and sum l per head), so scores
// never reach global memory. Query t of sequence b at p = positions[b] + t % PER_SEQ sees rows j <= p
// (and the window). o_lat[t, h, :] = sum_j softmax_j(SCALE * (q_lat . c_j + q_pe . k_pe_j)) c_j.
template <bool FP8, class TL, class TR, class TO>
__device__ __forceinline__ void latent_attention_body(const T0* __restrict__ positions, const T1* __restrict__ q_lat,
                                                      const T2* __restrict__ q, const TL* __restrict__ latent,
                                                      const float* __restrict__ scales, const TR* __restrict__ rope,
                                                      TO* __restrict__ o) {
  constexpr int W = KVR + ROPE;
  __shared__ float Qs[HG * KS];
  __shared__ float Kv[BK * KS];
  __shared__ float P[HG * BK];
  __shared__ float m[HG], l[HG], alpha[HG];
  const int g = blockIdx.x;
  const i64 t = blockIdx.y;
  const i64 b = t / PER_SEQ;
  i64 p = (i64)as_index(positions[b]) + t % PER_SEQ;
  if (p > LEN - 1) p = LEN - 1;
  for (int e = threadIdx.x; e < HG * W; e += blockDim.x) {
    const int h = e / W, c = e % W;
    const i64 head = (i64)g * HG + h;
    Qs[h * KS + c] = c < KVR ? (float)q_lat[(t * HEADS + head) * KVR + c] : (float)q[(t * HEADS + head) * DQK + NOPE + c - KVR];
  }
  if (threadIdx.x < HG) {
    m[threadIdx.x] = NEG_INF;
    l[threadIdx.x] = 0.0f;
  }
  float acc[PER];
#pragma unroll
  for (int i = 0; i < PER; ++i) acc[i] = 0.0f;
  for (i64 k0 = 0; k0 <= p; k0 += BK) {
    // A tile wholly outside the window (and past the sinks) is skipped by the whole block.
    if (WINDOW > 0 && k0 + BK - 1 <= p - WINDOW && k0 >= SINKS) continue;
    __syncthreads();
    for (int e = threadIdx.x; e < BK * W; e += blockDim.x) {
      const int j = e / W, c = e % W;
      const i64 row = b * LEN + k0 + j;
      float v = 0.0f;
      if (k0 + j <= p) {
        if (c < KVR) {
          if constexpr (FP8)
            v = from_e4m3(latent[row * KVR + c].bits) * scales[row * GROUPS + c / TILE];
          else
            v = (float)latent[row * KVR + c];
        } else {
          v = (float)rope[row * ROPE + c - KVR];
        }
      }
      Kv[j * KS + c] = v;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < HG * BK; e += blockDim.x) {
      const int h = e / BK, j = e % BK;
      const i64 key = k0 + j;
      const bool seen = key <= p && (WINDOW == 0 || p - key < WINDOW || key < SINKS);
      float s = NEG_INF;
      if (seen) {
        float dot = 0.0f;
        for (int c = 0; c < W; ++c) dot += Qs[h * KS + c] * Kv[j * KS + c];
        s = SCALE * dot;
      }
      P[h * BK + j] = s;
    }
    __syncthreads();
    if (threadIdx.x < HG) {
      const int h = threadIdx.x;
      float mx = NEG_INF;
      for (int j = 0; j < BK; ++j) mx = fmaxf(mx, P[h * BK + j]);
      const float mnew = fmaxf(m[h], mx);
      const float corr = m[h] == NEG_INF ? 0.0f : expf(m[h] - mnew);
      float sum = 0.0f;
      for (int j = 0; j < BK; ++j) {
        const float s = P[h * BK + j];
        const float e = s == NEG_INF ? 0.0f : expf(s - mnew);
        P[h * BK + j] = e;
        sum += e;
      }
      l[h] = l[h] * corr + sum;
      m[h] = mnew;
      alpha[h] = corr;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const int e = threadIdx.x + i * LATENT_ATTENTION_THREADS;
      if (e < HG * KVR) {
        const int h = e / KVR, c = e % KVR;
        float a = acc[i] * alpha[h];
        for (int j = 0; j < BK; ++j) a += P[h * BK + j] * Kv[j * KS + c];
        acc[i] = a;
      }
    }
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int e = threadIdx.x + i * LATENT_ATTENTION_THREADS;
    if (e < HG * KVR) {
      const int h = e / KVR, c = e % KVR;
      o[(t * HEADS + (i64)g * HG + h) * KVR + c] = l[h] > 0.0f ? acc[i] / l[h] : 0.0f;
    }
  }
}

extern "C" __global__ void __launch_bounds__(LATENT_ATTENTION_THREADS) latent_attention(
    const T0* __restrict__ positions, const T1* __restrict__ q_lat, const T2* __restrict__ q,
    const T3* __restrict__ latent, const T4* __restrict__ rope, T5* __restrict__ o_lat) {
  latent_attention_body<false, T3, T4, T5>(positions, q_lat, q, latent, nullptr, rope, o_lat);
}
