// dsv3c generated kernel mla_attention_bwd_h16_d96_v64_t4096_35581063.cu — do not edit: `dsv3c compile` writes it.
// op: AttentionBwd
//   dS_ij = p_ij (do_i . v_j - do_i . o_i); dq += scale dS k; dk += scale dS^T q; dv += p^T do
//   mask: causal
//   dq: a block per (query tile, head, sequence); dkv: a block per (key tile, sequence) over all heads
// specialized for: BATCH=1 SEQ=4096 HEADS=16 NOPE=64 ROPE=32 DQK=96 DV=64 KPE_STRIDE=288 KPE_OFFSET=256
//   SCALE=0.10206208 WINDOW=0 SINKS=0 BQ=32 BKV=32 THREADS=128
// arguments ((w) overwritten, (+) accumulated, (rw) in place): q bf16, kvb bf16, kva bf16, o bf16, lse f32,
//   do f32, dq f32 (+), dkvb f32 (+), dkva f32 (+)
// launches, in order:
//   attention_bwd_dq<<<(128, 16, 1), 128, 45696>>>  static smem 0 B
//   attention_bwd_dkv<<<(128, 1, 1), 128, 50176>>>  static smem 0 B

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
typedef float T5;  // do
typedef float T6;  // dq
typedef float T7;  // dkvb
typedef float T8;  // dkva
constexpr int BATCH = 1;
constexpr int SEQ = 4096;
constexpr int HEADS = 16;
constexpr int NOPE = 64;
constexpr int ROPE = 32;
constexpr int DQK = 96;
constexpr int DV = 64;
constexpr int KPE_STRIDE = 288;
constexpr int KPE_OFFSET = 256;
constexpr float SCALE = 0.10206208f;
constexpr int WINDOW = 0;
constexpr int SINKS = 0;
constexpr int BQ = 32;
constexpr int BKV = 32;
constexpr int THREADS = 128;
constexpr int ATTENTION_BWD_DQ_THREADS = 128;
constexpr int ATTENTION_BWD_DKV_THREADS = 128;

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

// Flash-style backward in two deterministic launches (no atomics), recomputing p_ij = exp(SCALE q_i.k_j - lse_i):
//   dq:  a block per (query tile, head, sequence); dq_i += SCALE sum_j dS_ij k_j.
//   dkv: a block per (key tile, sequence) that walks every head, so the rope key shared by the heads sums
//        its gradient in registers; dk_j += SCALE sum_i dS_ij q_i, dv_j += sum_i p_ij do_i.
// dS_ij = p_ij (do_i . v_j - D_i), D_i = do_i . o_i (recomputed per tile: no scratch buffer).
extern "C" __global__ void __launch_bounds__(ATTENTION_BWD_DQ_THREADS) attention_bwd_dq(
    const T0* __restrict__ q, const T1* __restrict__ kvb, const T2* __restrict__ kva,
    const T3* __restrict__ o, const T4* __restrict__ lse, const T5* __restrict__ dout, T6* __restrict__ dq,
    T7* __restrict__ dkvb, T8* __restrict__ dkva) {
  extern __shared__ float smem[];
  float* Qs = smem;
  float* dOs = Qs + BQ * QS;
  float* Ks = dOs + BQ * VS;
  float* Vs = Ks + BKV * QS;
  float* dSs = Vs + BKV * VS;
  const int r = threadIdx.x >> 2, tq = threadIdx.x & 3;
  const int q0 = blockIdx.x * BQ, h = blockIdx.y, b = blockIdx.z, i = q0 + r;
  const i64 row = ((i64)b * SEQ + (i < SEQ ? i : 0)) * HEADS + h;
  load_rows<DQK>(q, b, h, q0, Qs, QS);
  load_rows<DV>(dout, b, h, q0, dOs, VS);
  __syncthreads();
  float dd = 0.0f;
  if (i < SEQ)
    for (int d = tq; d < DV; d += 4) dd += dOs[r * VS + d] * o[row * DV + d];
  dd += __shfl_xor_sync(0xffffffffu, dd, 1);
  dd += __shfl_xor_sync(0xffffffffu, dd, 2);
  const float L = i < SEQ ? lse[row] : 0.0f;
  float acc[DQ4];
#pragma unroll
  for (int jd = 0; jd < DQ4; ++jd) acc[jd] = 0.0f;
  const int kend = q0 + BQ < SEQ ? q0 + BQ : SEQ;
  for (int k0 = 0; k0 < kend; k0 += BKV) {
    if (!tile_visible(q0, k0)) continue;
    __syncthreads();
    load_kv(kvb, kva, b, h, k0, Ks, Vs, VS);
    __syncthreads();
    float s[8], dp[8];
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) s[jj] = dp[jj] = 0.0f;
    for (int d = 0; d < DQK; ++d) {
      const float qv = Qs[r * QS + d];
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) s[jj] += qv * Ks[(tq + 4 * jj) * QS + d];
    }
    for (int d = 0; d < DV; ++d) {
      const float g = dOs[r * VS + d];
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) dp[jj] += g * Vs[(tq + 4 * jj) * VS + d];
    }
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) {
      const float p = visible(i, k0 + tq + 4 * jj) ? expf(s[jj] * SCALE - L) : 0.0f;
      dSs[r * PS + tq + 4 * jj] = p * (dp[jj] - dd) * SCALE;
    }
    __syncwarp();
    for (int c = 0; c < BKV; ++c) {
      const float g = dSs[r * PS + c];
#pragma unroll
      for (int jd = 0; jd < DQ4; ++jd) {
        const int d = tq + 4 * jd;
        if (d < DQK) acc[jd] += g * Ks[c * QS + d];
      }
    }
  }
  if (i < SEQ) {
#pragma unroll
    for (int jd = 0; jd < DQ4; ++jd) {
      const int d = tq + 4 * jd;
      if (d < DQK) dq[row * DQK + d] += acc[jd];
    }
  }
}

extern "C" __global__ void __launch_bounds__(ATTENTION_BWD_DKV_THREADS) attention_bwd_dkv(
    const T0* __restrict__ q, const T1* __restrict__ kvb, const T2* __restrict__ kva,
    const T3* __restrict__ o, const T4* __restrict__ lse, const T5* __restrict__ dout, T6* __restrict__ dq,
    T7* __restrict__ dkvb, T8* __restrict__ dkva) {
  extern __shared__ float smem[];
  float* Ks = smem;
  float* Vs = Ks + BKV * QS;
  float* Qs = Vs + BKV * VS;
  float* dOs = Qs + BQ * QS;
  float* Ps = dOs + BQ * VS;
  float* dSs = Ps + BKV * PS;
  float* Ls = dSs + BKV * PS;
  float* Ds = Ls + BQ;
  const int c = threadIdx.x >> 2, tq = threadIdx.x & 3;
  const int k0 = blockIdx.x * BKV, b = blockIdx.y, j = k0 + c;
  float dkpe[RP4];
#pragma unroll
  for (int jd = 0; jd < RP4; ++jd) dkpe[jd] = 0.0f;
  for (int h = 0; h < HEADS; ++h) {
    __syncthreads();
    load_kv(kvb, kva, b, h, k0, Ks, Vs, VS);
    float dk[NP4], dv[DV4];
#pragma unroll
    for (int jd = 0; jd < NP4; ++jd) dk[jd] = 0.0f;
#pragma unroll
    for (int jd = 0; jd < DV4; ++jd) dv[jd] = 0.0f;
    for (int q0 = (k0 / BQ) * BQ; q0 < SEQ; q0 += BQ) {
      if (!tile_visible(q0, k0)) continue;
      __syncthreads();
      load_rows<DQK>(q, b, h, q0, Qs, QS);
      load_rows<DV>(dout, b, h, q0, dOs, VS);
      {
        // D_i and lse_i of this query tile: 4 threads per row.
        const int rr = threadIdx.x >> 2, i = q0 + rr;
        const i64 row = ((i64)b * SEQ + (i < SEQ ? i : 0)) * HEADS + h;
        float dd = 0.0f;
        if (i < SEQ)
          for (int d = tq; d < DV; d += 4) dd += dout[row * DV + d] * o[row * DV + d];
        dd += __shfl_xor_sync(0xffffffffu, dd, 1);
        dd += __shfl_xor_sync(0xffffffffu, dd, 2);
        if (tq == 0) {
          Ds[rr] = dd;
          Ls[rr] = i < SEQ ? lse[row] : 0.0f;
        }
      }
      __syncthreads();
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) {
        const int rr = tq + 4 * jj;
        float s = 0.0f, dp = 0.0f;
        for (int d = 0; d < DQK; ++d) s += Qs[rr * QS + d] * Ks[c * QS + d];
        for (int d = 0; d < DV; ++d) dp += dOs[rr * VS + d] * Vs[c * VS + d];
        const float p = visible(q0 + rr, j) ? expf(s * SCALE - Ls[rr]) : 0.0f;
        Ps[c * PS + rr] = p;
        dSs[c * PS + rr] = p * (dp - Ds[rr]) * SCALE;
      }
      __syncwarp();
      for (int rr = 0; rr < BQ; ++rr) {
        const float p = Ps[c * PS + rr], g = dSs[c * PS + rr];
#pragma unroll
        for (int jd = 0; jd < DV4; ++jd) {
          const int d = tq + 4 * jd;
          if (d < DV) dv[jd] += p * dOs[rr * VS + d];
        }
#pragma unroll
        for (int jd = 0; jd < NP4; ++jd) {
          const int d = tq + 4 * jd;
          if (d < NOPE) dk[jd] += g * Qs[rr * QS + d];
        }
#pragma unroll
        for (int jd = 0; jd < RP4; ++jd) {
          const int d = tq + 4 * jd;
          if (d < ROPE) dkpe[jd] += g * Qs[rr * QS + NOPE + d];
        }
      }
    }
    if (j < SEQ) {
      const i64 row = ((i64)b * SEQ + j) * HEADS + h;
#pragma unroll
      for (int jd = 0; jd < NP4; ++jd) {
        const int d = tq + 4 * jd;
        if (d < NOPE) dkvb[row * (NOPE + DV) + d] += dk[jd];
      }
#pragma unroll
      for (int jd = 0; jd < DV4; ++jd) {
        const int d = tq + 4 * jd;
        if (d < DV) dkvb[row * (NOPE + DV) + NOPE + d] += dv[jd];
      }
    }
  }
  if (j < SEQ) {
#pragma unroll
    for (int jd = 0; jd < RP4; ++jd) {
      const int d = tq + 4 * jd;
      if (d < ROPE) dkva[((i64)b * SEQ + j) * KPE_STRIDE + KPE_OFFSET + d] += dkpe[jd];
    }
  }
}
