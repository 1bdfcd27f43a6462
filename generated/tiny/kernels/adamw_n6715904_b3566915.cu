// dsv3c generated kernel adamw_n6715904_b3566915.cu — do not edit: `dsv3c compile` writes it.
// op: optimizer step (adamw)
//   nothing unless norm * grad_scale is finite and <= max_grad_norm (the step guard)
//   f = grad_scale * min(1, clip / (norm * grad_scale)) when clip > 0, else grad_scale
//   g = grad * f; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr ((m/c1) / (sqrt(v/c2) + eps) + wd p)
// specialized for: N=6715904 DECAY_END=275968 EMBEDDING_END=6714880 BF16_MOMENTS=false S_LR=0 S_STEP=1
//   S_GRAD_SCALE=2 S_BETA1=3 S_BETA2=4 S_EPS=5 S_WEIGHT_DECAY=6 S_EMBEDDING_DECAY=7 S_CLIP=8
//   S_MAX_GRAD_NORM=9
// arguments ((w) overwritten, (+) accumulated, (rw) in place): scalars f32, norm f32, grad f32,
//   param f32 (rw), m f32 (rw), v f32 (rw)
// launches, in order:
//   adamw_step<<<(4096, 1, 1), 256, 0>>>  static smem 0 B

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
typedef float T0;  // scalars
typedef float T1;  // norm
typedef float T2;  // grad
typedef float T3;  // param
typedef float T4;  // m
typedef float T5;  // v
constexpr int N = 6715904;
constexpr int DECAY_END = 275968;
constexpr int EMBEDDING_END = 6714880;
constexpr bool BF16_MOMENTS = false;
constexpr int S_LR = 0;
constexpr int S_STEP = 1;
constexpr int S_GRAD_SCALE = 2;
constexpr int S_BETA1 = 3;
constexpr int S_BETA2 = 4;
constexpr int S_EPS = 5;
constexpr int S_WEIGHT_DECAY = 6;
constexpr int S_EMBEDDING_DECAY = 7;
constexpr int S_CLIP = 8;
constexpr int S_MAX_GRAD_NORM = 9;
constexpr int ADAMW_STEP_THREADS = 256;

// The step guard (scalar S_MAX_GRAD_NORM): a step's update applies only when the averaged gradient's
// norm, norm * grad_scale in f64, is finite and at most the limit (+inf: any finite norm; negative:
// never). The CPU's `update_applies`, comparison for comparison.
__device__ __forceinline__ bool update_applies(const float* s, const float* norm) {
  const double n = (double)norm[0] * (double)s[S_GRAD_SCALE];
  const double finite_max = 1.7976931348623157e308;  // |n| <= DBL_MAX: finite (NaN compares false)
  return n >= -finite_max && n <= finite_max && n <= (double)s[S_MAX_GRAD_NORM];
}

// The optimizer step over the trained parameters [0, N), reading the step's scalars (S_* indices):
//   the gradient is scaled by grad_scale (accumulation averaging) and by min(1, clip / |mean grad|)
//   when clip > 0 (the norm from grad_norm), then the parameter and its moments are updated in place.
//   Weight decay: [0, DECAY_END) at weight_decay, [DECAY_END, EMBEDDING_END) at embedding_decay, none
//   after. Moments are f32, or rounded to bf16 when BF16_MOMENTS. Math in f64 per element.
__device__ __forceinline__ float round_moment(float x) {
  if (!BF16_MOMENTS) return x;
  u16 h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
  return __uint_as_float((u32)h << 16);
}

// b^t for t >= 0 by binary exponentiation — the CPU's `powi` (compiler-rt's __powidf2) step for step.
__device__ __forceinline__ double powi(double b, int t) {
  double r = 1.0;
  while (true) {
    if (t & 1) r *= b;
    t /= 2;
    if (t == 0) break;
    b *= b;
  }
  return r;
}

__device__ __forceinline__ double grad_factor(const float* s, const float* norm) {
  const double scale = (double)s[S_GRAD_SCALE], clip = (double)s[S_CLIP];
  const double n = (double)norm[0] * scale;  // the norm of the averaged gradient
  return scale * (clip > 0.0 && n > clip ? clip / n : 1.0);
}

__device__ __forceinline__ double decay_of(const float* s, i64 i) {
  return i < DECAY_END ? (double)s[S_WEIGHT_DECAY] : (i < EMBEDDING_END ? (double)s[S_EMBEDDING_DECAY] : 0.0);
}


// AdamW: bias-corrected moments, decoupled weight decay (helpers in optimizer.cuh).
extern "C" __global__ void __launch_bounds__(ADAMW_STEP_THREADS) adamw_step(const T0* __restrict__ s, const T1* __restrict__ norm,
                                                            const T2* __restrict__ grad, T3* __restrict__ param,
                                                            T4* __restrict__ m, T5* __restrict__ v) {
  if (!update_applies(s, norm)) return;
  const double f = grad_factor(s, norm);
  const double lr = s[S_LR], b1 = s[S_BETA1], b2 = s[S_BETA2], eps = s[S_EPS];
  const int t = (int)s[S_STEP];
  const double c1 = 1.0 - powi(b1, t), c2 = 1.0 - powi(b2, t);
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) {
    const double g = (double)(float)(grad[i] * f);
    const double mi = b1 * m[i] + (1.0 - b1) * g;
    const double vi = b2 * v[i] + (1.0 - b2) * g * g;
    m[i] = round_moment((float)mi);
    v[i] = round_moment((float)vi);
    const double update = (mi / c1) / (sqrt(vi / c2) + eps) + decay_of(s, i) * param[i];
    param[i] = (float)(param[i] - lr * update);
  }
}
