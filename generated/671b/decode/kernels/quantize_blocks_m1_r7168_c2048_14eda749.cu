// dsv3c generated kernel quantize_blocks_m1_r7168_c2048_14eda749.cu — do not edit: `dsv3c compile` writes it.
// op: Quantize
//   q = e4m3(x / scale), scale = max(amax, 1e-4) / 448 per Blocks group of 128
//   grid: one block per 128 x 128 region of each matrix, 256 threads
// specialized for: MATS=1 ROWS=7168 COLS=2048 SCALING=2
// arguments ((w) overwritten, (+) accumulated, (rw) in place): x f32, q e4m3 (w), scales f32 (w)
// launches, in order:
//   quantize<<<(16, 56, 1), 256, 0>>>  static smem 1024 B

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
typedef float T0;  // x
typedef e4m3 T1;  // q
typedef float T2;  // scales
constexpr int MATS = 1;
constexpr int ROWS = 7168;
constexpr int COLS = 2048;
constexpr int SCALING = 2;
constexpr int QUANTIZE_THREADS = 256;

// E4M3 quantization of MATS dense ROWS x COLS matrices, one block per 128 x 128 region (grid: column
// regions, row regions, matrices): each group's scale is max(amax, 1e-4) / 448 and its values x / scale
// rounded to nearest-even and saturated. SCALING 0: 1 x 128 row tiles, scales [ROWS, CT]; 1: 128 x 1
// column tiles, [RT, COLS]; 2: 128 x 128 blocks, [RT, CT] (each matrix's after the previous one's).
static_assert(QUANTIZE_THREADS == 256, "two threads per column of a 128-wide region, eight warps per row tile");
constexpr int CT = (COLS + 127) / 128, RT = (ROWS + 127) / 128;
constexpr i64 PER_MAT = SCALING == 0 ? (i64)ROWS * CT : (SCALING == 1 ? (i64)RT * COLS : (i64)RT * CT);

extern "C" __global__ void __launch_bounds__(QUANTIZE_THREADS) quantize(const T0* __restrict__ x, T1* __restrict__ q,
                                                          T2* __restrict__ scales) {
  __shared__ float red[256];
  const int c0 = blockIdx.x * 128, r0 = blockIdx.y * 128, tid = threadIdx.x;
  const T0* X = x + (i64)blockIdx.z * ROWS * COLS;
  T1* Q = q + (i64)blockIdx.z * ROWS * COLS;
  T2* S = scales + (i64)blockIdx.z * PER_MAT;
  if (SCALING == 0) {
    // A warp per row: four columns a lane, the tile's amax by shuffles.
    const int warp = tid >> 5, lane = tid & 31;
    for (int i = warp; i < 128 && r0 + i < ROWS; i += 8) {
      const i64 row = (i64)(r0 + i) * COLS;
      float v[4], amax = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = c0 + lane * 4 + j;
        v[j] = c < COLS ? (float)X[row + c] : 0.0f;
        amax = fmaxf(amax, fabsf(v[j]));
      }
      const float s = fp8_scale(warp_max(amax));
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = c0 + lane * 4 + j;
        if (c < COLS) Q[row + c].bits = to_e4m3(v[j] / s);
      }
      if (lane == 0) S[(i64)(r0 + i) * CT + blockIdx.x] = s;
    }
  } else {
    // A thread per column and half of the rows; the halves' amaxes meet in shared memory.
    const int c = c0 + (tid & 127), h0 = r0 + (tid >> 7) * 64;
    const int h1 = h0 + 64 < ROWS ? h0 + 64 : ROWS;
    float amax = 0.0f;
    if (c < COLS)
      for (int r = h0; r < h1; ++r) amax = fmaxf(amax, fabsf((float)X[(i64)r * COLS + c]));
    red[tid] = amax;
    __syncthreads();
    if (SCALING == 1) {
      amax = fmaxf(red[tid & 127], red[(tid & 127) + 128]);
    } else {
      // One scale for the block: every thread reduces the same values in the same order.
      amax = 0.0f;
      for (int i = 0; i < 256; ++i) amax = fmaxf(amax, red[i]);
    }
    const float s = fp8_scale(amax);
    if (c < COLS)
      for (int r = h0; r < h1; ++r) Q[(i64)r * COLS + c].bits = to_e4m3((float)X[(i64)r * COLS + c] / s);
    if (SCALING == 1 && tid < 128 && c < COLS) S[(i64)blockIdx.y * COLS + c] = s;
    if (SCALING == 2 && tid == 0) S[(i64)blockIdx.y * CT + blockIdx.x] = s;
  }
}
