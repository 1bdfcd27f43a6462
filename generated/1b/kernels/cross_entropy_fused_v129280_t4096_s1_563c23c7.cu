// dsv3c generated kernel cross_entropy_fused_v129280_t4096_s1_563c23c7.cu — do not edit: `dsv3c compile` writes it.
// op: CrossEntropy
//   loss = mean over labelled positions of lse(row) - row[label]; row := grad_scale (softmax - onehot) / n
//   one block per row: max, sum of exp in f64, then the gradient in place
// specialized for: BATCH=1 SEQ=4096 VOCAB=129280 SHIFT=1 VALID=4095 GRAD_SCALE=1.0 THREADS=512
// arguments ((w) overwritten, (+) accumulated, (rw) in place): logits bf16 (rw), tokens i32, loss f32 (w)
// launches, in order:
//   ce_clear<<<(1, 1, 1), 32, 0>>>  static smem 0 B
//   ce_rows<<<(4096, 1, 1), 512, 0>>>  static smem 400 B

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
typedef bf16 T0;  // logits
typedef i32 T1;  // tokens
typedef float T2;  // loss
constexpr int BATCH = 1;
constexpr int SEQ = 4096;
constexpr int VOCAB = 129280;
constexpr int SHIFT = 1;
constexpr int VALID = 4095;
constexpr float GRAD_SCALE = 1.0f;
constexpr int THREADS = 512;
constexpr int CE_CLEAR_THREADS = 32;
constexpr int CE_ROWS_THREADS = 512;

// Fused next-token cross-entropy. Row r = (b, i) has label tokens[b, i + SHIFT] when i + SHIFT < SEQ.
// One block per row: max, sum of exp (f64), lse; the row is overwritten with
// GRAD_SCALE * (softmax - onehot) / VALID (zeros on rows without a label): no second copy of the logits.
// The mean loss is summed into loss[0] by one atomicAdd per row, after ce_clear zeroed it (the order of
// those adds is the one nondeterministic step: the last bits of the loss, never of a gradient).
extern "C" __global__ void __launch_bounds__(CE_CLEAR_THREADS) ce_clear(T0* __restrict__ logits, const T1* __restrict__ tokens,
                                    T2* __restrict__ loss) {
  if (threadIdx.x == 0 && blockIdx.x == 0) loss[0] = 0.0f;
}

extern "C" __global__ void __launch_bounds__(CE_ROWS_THREADS) ce_rows(T0* __restrict__ logits,
                                                             const T1* __restrict__ tokens,
                                                             T2* __restrict__ loss) {
  __shared__ float scratch[33];
  __shared__ double scratch64[33];
  const i64 r = blockIdx.x;
  const i64 b = r / SEQ, i = r % SEQ;
  T0* row = logits + r * VOCAB;
  const float inv_n = 1.0f / (float)(VALID > 0 ? VALID : 1);
  if (i + SHIFT >= SEQ) {
    for (int c = threadIdx.x; c < VOCAB; c += THREADS) row[c] = 0.0f;
    return;
  }
  const float t = tokens[b * SEQ + i + SHIFT];
  const bool ok = t >= 0.0f && t == truncf(t) && t < (float)VOCAB;
  if (!ok) {
    for (int c = threadIdx.x; c < VOCAB; c += THREADS) row[c] = 0.0f;
    if (threadIdx.x == 0) atomicAdd(loss, __int_as_float(0x7fc00000));
    return;
  }
  const int label = (int)t;
  float mx = NEG_INF;
  for (int c = threadIdx.x; c < VOCAB; c += THREADS) mx = fmaxf(mx, row[c]);
  mx = block_max(mx, scratch);
  double sum = 0.0;
  for (int c = threadIdx.x; c < VOCAB; c += THREADS) sum += exp((double)(row[c] - mx));
  sum = block_sum_f64(sum, scratch64);
  const double lse = (double)mx + log(sum);
  const float target = row[label];
  __syncthreads();  // every thread has read row[label] before it is overwritten
  for (int c = threadIdx.x; c < VOCAB; c += THREADS) {
    float g = (float)exp((double)row[c] - lse) * GRAD_SCALE * inv_n;
    if (c == label) g -= GRAD_SCALE * inv_n;
    row[c] = g;
  }
  if (threadIdx.x == 0) atomicAdd(loss, (float)((lse - (double)target) / (double)(VALID > 0 ? VALID : 1)));
}
