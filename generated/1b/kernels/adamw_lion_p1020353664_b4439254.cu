// dsv3c generated kernel adamw_lion_p1020353664_b4439254.cu — do not edit: `dsv3c compile` writes it.
// op: optimizer (AdamW / Lion with the global grad norm)
//   grad_norm_partials(grad, mask u8, partials f64[CHUNKS]); grad_norm_finish(partials, norm f64[1]);
//   adamw_step(param, grad, m, v, mask, norm, lr, beta1, beta2, eps, wd, 1-beta1^t, 1-beta2^t, grad_scale, clip, bf16)
//   lion_step(param, grad, m, mask, norm, lr, beta1, beta2, wd, grad_scale, clip, bf16)
// specialized for: P=1020353664 CHUNK=16384 CHUNKS=62278
// arguments (f32 arena slices unless noted): see each entry
// launches, in order:
//   grad_norm_partials<<<(62278, 1, 1), 256, 0>>>  static smem 264 B
//   grad_norm_finish<<<(1, 1, 1), 1024, 0>>>  static smem 264 B
//   adamw_step<<<(8192, 1, 1), 256, 0>>>  static smem 0 B
//   lion_step<<<(8192, 1, 1), 256, 0>>>  static smem 0 B

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
constexpr int P = 1020353664;
constexpr int CHUNK = 16384;
constexpr int CHUNKS = 62278;

// The optimizer over the whole parameter arena (P elements), fused with the global gradient norm:
//   grad_norm_partials: sum of g^2 (f64) over the trained elements (mask != 0) of each CHUNK-element chunk;
//   grad_norm_finish:   one block sums the partials in a fixed order; norm[0] = sqrt of the total;
//   adamw_step / lion_step: one pass that scales the gradient by `grad_scale` (accumulation averaging) and by
//     min(1, clip / norm) when clip > 0, then updates the parameter and its moments in place. mask bit 0:
//     trained; bit 1: decayed. Moments are f32, or rounded to bf16 when bf16_moments != 0.
// Deterministic: every reduction runs in a fixed order.
__device__ __forceinline__ float round_moment(float x, int bf16_moments) {
  if (!bf16_moments) return x;
  u16 h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
  return __uint_as_float((u32)h << 16);
}

extern "C" __global__ void __launch_bounds__(256) grad_norm_partials(const float* __restrict__ grad,
                                                                    const u8* __restrict__ mask,
                                                                    double* __restrict__ partials) {
  __shared__ double scratch[33];
  const i64 base = (i64)blockIdx.x * CHUNK;
  double s = 0.0;
  for (i64 i = base + threadIdx.x; i < base + CHUNK && i < P; i += 256)
    if (mask[i]) s += (double)grad[i] * (double)grad[i];
  s = block_sum_f64(s, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

extern "C" __global__ void __launch_bounds__(1024) grad_norm_finish(const double* __restrict__ partials,
                                                                   double* __restrict__ norm) {
  __shared__ double scratch[33];
  // Thread t sums a contiguous run of partials, then the block sums the runs in thread order.
  constexpr i64 PER = (CHUNKS + 1023) / 1024;
  double s = 0.0;
  for (i64 c = threadIdx.x * PER; c < (threadIdx.x + 1) * PER && c < CHUNKS; ++c) s += partials[c];
  s = block_sum_f64(s, scratch);
  if (threadIdx.x == 0) norm[0] = sqrt(s);
}

__device__ __forceinline__ double grad_factor(const double* norm, double grad_scale, double clip) {
  const double n = norm[0] * grad_scale;  // the norm of the averaged gradient
  return grad_scale * (clip > 0.0 && n > clip ? clip / n : 1.0);
}

extern "C" __global__ void __launch_bounds__(256) adamw_step(float* __restrict__ param, const float* __restrict__ grad,
                                                            float* __restrict__ m, float* __restrict__ v,
                                                            const u8* __restrict__ mask,
                                                            const double* __restrict__ norm, double lr, double beta1,
                                                            double beta2, double eps, double weight_decay,
                                                            double bias1, double bias2, double grad_scale, double clip,
                                                            int bf16_moments) {
  const double f = grad_factor(norm, grad_scale, clip);
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < P; i += (i64)gridDim.x * blockDim.x) {
    const u8 mk = mask[i];
    if (!mk) continue;
    const double g = (double)(float)(grad[i] * f);
    const double mi = beta1 * m[i] + (1.0 - beta1) * g;
    const double vi = beta2 * v[i] + (1.0 - beta2) * g * g;
    m[i] = round_moment((float)mi, bf16_moments);
    v[i] = round_moment((float)vi, bf16_moments);
    const double update = (mi / bias1) / (sqrt(vi / bias2) + eps) + ((mk & 2) ? weight_decay * param[i] : 0.0);
    param[i] = (float)(param[i] - lr * update);
  }
}

extern "C" __global__ void __launch_bounds__(256) lion_step(float* __restrict__ param, const float* __restrict__ grad,
                                                           float* __restrict__ m, const u8* __restrict__ mask,
                                                           const double* __restrict__ norm, double lr, double beta1,
                                                           double beta2, double weight_decay, double grad_scale,
                                                           double clip, int bf16_moments) {
  const double f = grad_factor(norm, grad_scale, clip);
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < P; i += (i64)gridDim.x * blockDim.x) {
    const u8 mk = mask[i];
    if (!mk) continue;
    const double g = (double)(float)(grad[i] * f), mi = m[i];
    const double c = beta1 * mi + (1.0 - beta1) * g;
    const double sign = c > 0.0 ? 1.0 : (c < 0.0 ? -1.0 : 0.0);
    param[i] = (float)(param[i] - lr * (sign + ((mk & 2) ? weight_decay * param[i] : 0.0)));
    m[i] = round_moment((float)(beta2 * mi + (1.0 - beta2) * g), bf16_moments);
  }
}
