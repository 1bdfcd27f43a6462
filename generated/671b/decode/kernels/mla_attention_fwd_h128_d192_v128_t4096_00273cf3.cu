// dsv3c generated kernel mla_attention_fwd_h128_d192_v128_t4096_00273cf3.cu — do not edit: `dsv3c compile` writes it.
// op: Attention
//   o_i = sum_j softmax_j(scale * q_i . k_j) v_j, k_j = [k_nope_j ; k_pe_j]; lse_i saved for the backward
//   mask: causal
//   a block per (32-query tile, head, sequence), 128 threads; 32-key tiles stream through shared memory
// specialized for: BATCH=1 SEQ=4096 HEADS=128 NOPE=128 ROPE=64 DQK=192 DV=128 KPE_STRIDE=576 KPE_OFFSET=512
//   SCALE=0.13523377 WINDOW=0 SINKS=0 BQ=32 BKV=32 THREADS=128
// arguments ((w) overwritten, (+) accumulated, (rw) in place): q bf16, kvb bf16, kva bf16, o bf16 (w),
//   lse f32 (w)
// launches, in order:
//   attention_fwd<<<(128, 128, 1), 128, 70016>>>  static smem 0 B

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
typedef bf16 T0;  // q
typedef bf16 T1;  // kvb
typedef bf16 T2;  // kva
typedef bf16 T3;  // o
typedef float T4;  // lse
constexpr int BATCH = 1;
constexpr int SEQ = 4096;
constexpr int HEADS = 128;
constexpr int NOPE = 128;
constexpr int ROPE = 64;
constexpr int DQK = 192;
constexpr int DV = 128;
constexpr int KPE_STRIDE = 576;
constexpr int KPE_OFFSET = 512;
constexpr float SCALE = 0.13523377f;
constexpr int WINDOW = 0;
constexpr int SINKS = 0;
constexpr int BQ = 32;
constexpr int BKV = 32;
constexpr int THREADS = 128;
constexpr int ATTENTION_FWD_THREADS = 128;

// MLA attention tiles: BQ queries x BKV keys per step, THREADS threads (the emitter's constants); a thread
// owns one row of a tile and every 4th column of it. Shared rows are padded by one float so strided row
// reads hit distinct banks.
static_assert(THREADS == 4 * BQ && BQ == BKV, "a thread per (row, column residue mod 4) of a square tile");
constexpr int QS = DQK + 1, VS = DV + 1, PS = BKV + 1;
constexpr int DQ4 = (DQK + 3) / 4, DV4 = (DV + 3) / 4, NP4 = (NOPE + 3) / 4, RP4 = (ROPE + 3) / 4;

// Is key j visible from query i? Causal, and within WINDOW (0: unlimited) or one of the first SINKS keys.
__device__ __forceinline__ bool visible(int i, int j) {
  return j <= i && i < SEQ && j < SEQ && (WINDOW == 0 || i - j < WINDOW || j < SINKS);
}

// Can any key of [k0, k0 + BKV) be visible from a query of [q0, q0 + BQ)?
__device__ __forceinline__ bool tile_visible(int q0, int k0) {
  return k0 <= q0 + BQ - 1 && (WINDOW == 0 || k0 < SINKS || q0 - (k0 + BKV - 1) < WINDOW);
}

// Key j of head h, dimension d < DQK: k_nope from kvb, then the decoupled rope key (shared by all heads) from kva.
template <typename TB, typename TA>
__device__ __forceinline__ float key(const TB* __restrict__ kvb, const TA* __restrict__ kva, int b, int j, int h, int d) {
  const i64 row = (i64)b * SEQ + j;
  return d < NOPE ? (float)kvb[(row * HEADS + h) * (NOPE + DV) + d] : (float)kva[row * KPE_STRIDE + KPE_OFFSET + (d - NOPE)];
}

template <typename TB>
__device__ __forceinline__ float value(const TB* __restrict__ kvb, int b, int j, int h, int d) {
  return kvb[(((i64)b * SEQ + j) * HEADS + h) * (NOPE + DV) + NOPE + d];
}

// Stages keys [k0, k0 + BKV) of head h into Ks[BKV][QS] and values into Vs[BKV][vs] (zeros past SEQ).
template <typename TB, typename TA>
__device__ __forceinline__ void load_kv(const TB* __restrict__ kvb, const TA* __restrict__ kva, int b, int h, int k0,
                                        float* Ks, float* Vs, int vs) {
  for (int e = threadIdx.x; e < BKV * DQK; e += THREADS) {
    const int c = e / DQK, d = e % DQK, j = k0 + c;
    Ks[c * QS + d] = j < SEQ ? key(kvb, kva, b, j, h, d) : 0.0f;
  }
  for (int e = threadIdx.x; e < BKV * DV; e += THREADS) {
    const int c = e / DV, d = e % DV, j = k0 + c;
    Vs[c * vs + d] = j < SEQ ? value(kvb, b, j, h, d) : 0.0f;
  }
}

// Stages rows [q0, q0 + BQ) of a [BATCH, SEQ, HEADS, W] tensor's head h into S[BQ][stride].
template <int W, typename TX>
__device__ __forceinline__ void load_rows(const TX* __restrict__ x, int b, int h, int q0, float* S, int stride) {
  for (int e = threadIdx.x; e < BQ * W; e += THREADS) {
    const int r = e / W, d = e % W, i = q0 + r;
    S[r * stride + d] = i < SEQ ? (float)x[(((i64)b * SEQ + i) * HEADS + h) * W + d] : 0.0f;
  }
}

// Flash-style forward: a block per (query tile, head, sequence); keys stream through shared memory with an
// online softmax (running max m and sum l per query row), so scores never reach global memory.
// o[b, i, h, :] = sum_j softmax_j(SCALE * q_i . k_j) v_j over visible keys; lse[b, i, h] = m + log(l).
extern "C" __global__ void __launch_bounds__(ATTENTION_FWD_THREADS) attention_fwd(const T0* __restrict__ q,
                                                                   const T1* __restrict__ kvb,
                                                                   const T2* __restrict__ kva,
                                                                   T3* __restrict__ o, T4* __restrict__ lse) {
  extern __shared__ float smem[];
  float* Qs = smem;
  float* Ks = Qs + BQ * QS;
  float* Vs = Ks + BKV * QS;
  float* Ps = Vs + BKV * DV;
  const int r = threadIdx.x >> 2, tq = threadIdx.x & 3;
  const int q0 = blockIdx.x * BQ, h = blockIdx.y, b = blockIdx.z, i = q0 + r;
  load_rows<DQK>(q, b, h, q0, Qs, QS);
  float m = NEG_INF, l = 0.0f, acc[DV4];
#pragma unroll
  for (int jd = 0; jd < DV4; ++jd) acc[jd] = 0.0f;
  const int kend = q0 + BQ < SEQ ? q0 + BQ : SEQ;
  for (int k0 = 0; k0 < kend; k0 += BKV) {
    if (!tile_visible(q0, k0)) continue;
    __syncthreads();
    load_kv(kvb, kva, b, h, k0, Ks, Vs, DV);
    __syncthreads();
    float s[8];
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) s[jj] = 0.0f;
    for (int d = 0; d < DQK; ++d) {
      const float qv = Qs[r * QS + d];
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) s[jj] += qv * Ks[(tq + 4 * jj) * QS + d];
    }
    float mx = NEG_INF;
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) {
      s[jj] = visible(i, k0 + tq + 4 * jj) ? s[jj] * SCALE : NEG_INF;
      mx = fmaxf(mx, s[jj]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float mnew = fmaxf(m, mx);
    const float corr = m == NEG_INF ? 0.0f : expf(m - mnew);
    float ps = 0.0f;
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) {
      const float p = s[jj] == NEG_INF ? 0.0f : expf(s[jj] - mnew);
      Ps[r * PS + tq + 4 * jj] = p;
      ps += p;
    }
    ps += __shfl_xor_sync(0xffffffffu, ps, 1);
    ps += __shfl_xor_sync(0xffffffffu, ps, 2);
    l = l * corr + ps;
    m = mnew;
#pragma unroll
    for (int jd = 0; jd < DV4; ++jd) acc[jd] *= corr;
    __syncwarp();
    for (int c = 0; c < BKV; ++c) {
      const float p = Ps[r * PS + c];
#pragma unroll
      for (int jd = 0; jd < DV4; ++jd) {
        const int d = tq + 4 * jd;
        if (d < DV) acc[jd] += p * Vs[c * DV + d];
      }
    }
  }
  if (i < SEQ) {
    const i64 row = ((i64)b * SEQ + i) * HEADS + h;
#pragma unroll
    for (int jd = 0; jd < DV4; ++jd) {
      const int d = tq + 4 * jd;
      if (d < DV) o[row * DV + d] = acc[jd] / l;
    }
    if (tq == 0) lse[row] = m + logf(l);
  }
}
