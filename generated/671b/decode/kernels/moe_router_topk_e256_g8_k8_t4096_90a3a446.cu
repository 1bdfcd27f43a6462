// dsv3c generated kernel moe_router_topk_e256_g8_k8_t4096_90a3a446.cu — do not edit: `dsv3c compile` writes it.
// op: Router
//   scores = sigmoid(logits); top-8 of scores + bias within the best 4 of 8 groups; weights normalized, x 2.5
//   one warp per token, 8 tokens per block
// specialized for: TOKENS=4096 EXPERTS=256 GROUPS=8 PER_GROUP=32 TOP_GROUPS=4 TOP_K=8 SIGMOID=true
//   NORMALIZE=true ROUTE_SCALE=2.5
// arguments ((w) overwritten, (+) accumulated, (rw) in place): logits f32, bias f32, scores f32 (w),
//   idx i32 (w), weights f32 (w)
// launches, in order:
//   router<<<(512, 1, 1), 256, 0>>>  static smem 16640 B

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
typedef float T0;  // logits
typedef float T1;  // bias
typedef float T2;  // scores
typedef i32 T3;  // idx
typedef float T4;  // weights
constexpr int TOKENS = 4096;
constexpr int EXPERTS = 256;
constexpr int GROUPS = 8;
constexpr int PER_GROUP = 32;
constexpr int TOP_GROUPS = 4;
constexpr int TOP_K = 8;
constexpr bool SIGMOID = true;
constexpr bool NORMALIZE = true;
constexpr float ROUTE_SCALE = 2.5f;
constexpr int ROUTER_THREADS = 256;

// DeepSeek router, one warp per token (8 per block). scores = sigmoid(logits) or softmax(logits);
// sel = scores + bias (the bias steers selection only; NaN ranks lowest, as -inf); with GROUPS > 1 each
// group is ranked by the sum of its two best sel, the best TOP_GROUPS groups kept; then the TOP_K best sel
// (ties to the lower index; -inf is a candidate, so every slot gets a distinct expert whatever the scores).
// weights = scores of the chosen, normalized to sum 1 when NORMALIZE, times ROUTE_SCALE. Ranked keys are
// never NaN, so NaN in sel marks an expert unavailable (its group dropped, or already chosen).
__device__ __forceinline__ float rank_key(float v) { return isnan(v) ? NEG_INF : v; }
#define UNAVAILABLE (__int_as_float(0x7fc00000))

extern "C" __global__ void __launch_bounds__(ROUTER_THREADS) router(const T0* __restrict__ logits,
                                                        const T1* __restrict__ bias,
                                                        T2* __restrict__ scores, T3* __restrict__ idx,
                                                        T4* __restrict__ weights) {
  __shared__ float sel_s[8][EXPERTS];
  __shared__ float sc_s[8][EXPERTS];
  __shared__ int chosen_s[8][TOP_K];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const i64 t = (i64)blockIdx.x * 8 + warp;
  if (t >= TOKENS) return;
  float* sel = sel_s[warp];
  float* sc = sc_s[warp];
  const float* lg = logits + t * EXPERTS;
  if (SIGMOID) {
    for (int e = lane; e < EXPERTS; e += 32) sc[e] = 1.0f / (1.0f + expf(-lg[e]));
  } else {
    float mx = NEG_INF;
    for (int e = lane; e < EXPERTS; e += 32) mx = fmaxf(mx, lg[e]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int e = lane; e < EXPERTS; e += 32) {
      sc[e] = expf(lg[e] - mx);
      sum += sc[e];
    }
    sum = warp_sum(sum);
    for (int e = lane; e < EXPERTS; e += 32) sc[e] /= sum;
  }
  for (int e = lane; e < EXPERTS; e += 32) {
    scores[t * EXPERTS + e] = sc[e];
    sel[e] = rank_key(sc[e] + bias[e]);
  }
  __syncwarp();
  if (GROUPS > 1) {
    // Group score: the sum of the group's two largest sel, in expert order as the reference does.
    float gs = NEG_INF;
    if (lane < GROUPS) {
      float t0 = NEG_INF, t1 = NEG_INF;
      for (int e = lane * PER_GROUP; e < (lane + 1) * PER_GROUP; ++e) {
        const float v = sel[e];
        if (v > t0) {
          t1 = t0;
          t0 = v;
        } else if (v > t1) {
          t1 = v;
        }
      }
      gs = rank_key(t0 + t1);
    }
    bool keep = false;
    for (int k = 0; k < TOP_GROUPS; ++k) {
      float v = gs;
      int who = (lane < GROUPS && !keep) ? lane : 32;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int ow = __shfl_xor_sync(0xffffffffu, who, o);
        if (ow != 32 && (who == 32 || ov > v || (ov == v && ow < who))) {
          v = ov;
          who = ow;
        }
      }
      if (who == 32) break;
      if (lane == who) keep = true;
    }
    const unsigned kept = __ballot_sync(0xffffffffu, keep);
    for (int e = lane; e < EXPERTS; e += 32)
      if (!((kept >> (e / PER_GROUP)) & 1u)) sel[e] = UNAVAILABLE;
    __syncwarp();
  }
  int found = 0;
  for (int k = 0; k < TOP_K; ++k) {
    float v = NEG_INF;
    int who = EXPERTS;
    for (int e = lane; e < EXPERTS; e += 32)
      if (!isnan(sel[e]) && (who == EXPERTS || sel[e] > v)) {
        v = sel[e];
        who = e;
      }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, v, o);
      const int ow = __shfl_xor_sync(0xffffffffu, who, o);
      if (ow != EXPERTS && (who == EXPERTS || ov > v || (ov == v && ow < who))) {
        v = ov;
        who = ow;
      }
    }
    if (who == EXPERTS) break;
    if (lane == 0) chosen_s[warp][k] = who;
    __syncwarp();
    if (lane == who % 32) sel[who] = UNAVAILABLE;
    __syncwarp();
    found = k + 1;
  }
  if (lane == 0) {
    float sum = 0.0f;
    for (int k = 0; k < found; ++k) sum += sc[chosen_s[warp][k]];
    const float norm = NORMALIZE ? 1.0f / (sum + 1e-20f) : 1.0f;
    // A validated route fills every slot; one left empty (kept groups smaller than TOP_K) is expert 0, weight 0.
    for (int k = 0; k < TOP_K; ++k) {
      idx[t * TOP_K + k] = k < found ? (float)chosen_s[warp][k] : 0.0f;
      weights[t * TOP_K + k] = k < found ? sc[chosen_s[warp][k]] * norm * ROUTE_SCALE : 0.0f;
    }
  }
}
