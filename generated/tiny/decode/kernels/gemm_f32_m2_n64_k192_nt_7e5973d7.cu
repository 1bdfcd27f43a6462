// dsv3c generated kernel gemm_f32_m2_n64_k192_nt_7e5973d7.cu — do not edit: `dsv3c compile` writes it.
// op: Gemm
//   C[m,n] = op(A)[m,k] . op(B)[k,n]; op(A) = A (stored [m, k]), op(B) = B^T (B stored [n, k])
//   f32 operands, f32 accumulation (SIMT)
//   grid: one block per 64 x 64 tile of C, 256 threads
// specialized for: M=2 N=64 K=192 LDA=192 LDB=192 LDC=64 TA=false TB=true ACCUMULATE=false BM=64 BN=64
//   THREADS=256
// arguments ((w) overwritten, (+) accumulated, (rw) in place): a f32, b f32, c f32 (w)
// launches, in order:
//   gemm<<<(1, 1, 1), 256, 0>>>  static smem 8704 B

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
typedef float T0;  // a
typedef float T1;  // b
typedef float T2;  // c
constexpr int M = 2;
constexpr int N = 64;
constexpr int K = 192;
constexpr int LDA = 192;
constexpr int LDB = 192;
constexpr int LDC = 64;
constexpr bool TA = false;
constexpr bool TB = true;
constexpr bool ACCUMULATE = false;
constexpr int BM = 64;
constexpr int BN = 64;
constexpr int THREADS = 256;
constexpr int GEMM_THREADS = 256;

// f32 SIMT GEMM core: C[m, n] (+)= op(A)[m, k] . op(B)[k, n] for one BM x BN output tile. A 256-thread block
// stages BK-deep slices of op(A) and op(B) in shared memory (the contiguous dimension read fastest, so global
// loads coalesce for either transpose), and each thread accumulates a 4 x 4 register tile in f32.
static_assert(BM == 64 && BN == 64 && THREADS == 256, "16 x 16 threads, a 4 x 4 register tile each");
constexpr int BK = 16;

template <typename XA, typename XB, typename XC>
__device__ __forceinline__ void gemm_tile(const XA* __restrict__ A, const XB* __restrict__ B, XC* __restrict__ C,
                                          int m, int n, int k, int m0, int n0) {
  __shared__ __align__(16) float As[BK][BM + 4];
  __shared__ __align__(16) float Bs[BK][BN + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float acc[4][4];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[r][c] = 0.0f;
  for (int k0 = 0; k0 < k; k0 += BK) {
#pragma unroll
    for (int e = tid; e < BM * BK; e += THREADS) {
      const int i = TA ? e % BM : e / BK, p = TA ? e / BM : e % BK;
      const int gi = m0 + i, gp = k0 + p;
      float v = 0.0f;
      if (gi < m && gp < k) v = TA ? A[(i64)gp * LDA + gi] : A[(i64)gi * LDA + gp];
      As[p][i] = v;
    }
#pragma unroll
    for (int e = tid; e < BN * BK; e += THREADS) {
      const int j = TB ? e / BK : e % BN, p = TB ? e % BK : e / BN;
      const int gj = n0 + j, gp = k0 + p;
      float v = 0.0f;
      if (gj < n && gp < k) v = TB ? B[(i64)gj * LDB + gp] : B[(i64)gp * LDB + gj];
      Bs[p][j] = v;
    }
    __syncthreads();
#pragma unroll
    for (int p = 0; p < BK; ++p) {
      const float4 a = *reinterpret_cast<const float4*>(&As[p][ty * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&Bs[p][tx * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] += av[r] * bv[c];
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int gi = m0 + ty * 4 + r, gj = n0 + tx * 4 + c;
      if (gi < m && gj < n) {
        XC* out = C + (i64)gi * LDC + gj;
        *out = ACCUMULATE ? *out + acc[r][c] : acc[r][c];
      }
    }
}

// C[M, N] (+)= op(A) . op(B): one block per BM x BN tile of C, grid (ceil(M / BM), ceil(N / BN)).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) gemm(const T0* __restrict__ a, const T1* __restrict__ b,
                                                      T2* __restrict__ c) {
  gemm_tile(a, b, c, M, N, K, blockIdx.x * BM, blockIdx.y * BN);
}
