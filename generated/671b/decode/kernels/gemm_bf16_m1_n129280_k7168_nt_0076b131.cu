// dsv3c generated kernel gemm_bf16_m1_n129280_k7168_nt_0076b131.cu — do not edit: `dsv3c compile` writes it.
// op: Gemm
//   C[m,n] = op(A)[m,k] . op(B)[k,n]; op(A) = A (stored [m, k]), op(B) = B^T (B stored [n, k])
//   operands rounded to bf16 on load, mma.sync m16n8k16, f32 accumulation, output rounded to bf16
//   grid: one block per 64 x 128 tile of C, 256 threads
// specialized for: M=1 N=129280 K=7168 LDA=7168 LDB=7168 LDC=129280 TA=false TB=true ACCUMULATE=false
//   FP8=false B_BLOCKS=false BM=64 BN=128 THREADS=256
// arguments ((w) overwritten, (+) accumulated, (rw) in place): a bf16, b bf16, c bf16 (w)
// launches, in order:
//   gemm<<<(1, 1010, 1), 256, 0>>>  static smem 27648 B

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
typedef bf16 T0;  // a
typedef bf16 T1;  // b
typedef bf16 T2;  // c
constexpr int M = 1;
constexpr int N = 129280;
constexpr int K = 7168;
constexpr int LDA = 7168;
constexpr int LDB = 7168;
constexpr int LDC = 129280;
constexpr bool TA = false;
constexpr bool TB = true;
constexpr bool ACCUMULATE = false;
constexpr bool FP8 = false;
constexpr bool B_BLOCKS = false;
constexpr int BM = 64;
constexpr int BN = 128;
constexpr int THREADS = 256;
constexpr int GEMM_THREADS = 256;

// Tensor-core GEMM core (mma.sync): C[m, n] (+)= op(A)[m, k] . op(B)[k, n] for one BM x BN output tile,
// 8 warps as 2 x 4, each a 32 x 32 sub-tile of m16n8 MMAs. An operand stored as e4m3 (quantized once,
// by Quantize) arrives with its scales: its bytes go to shared memory as they are and its tile's or
// block's scale is read beside them. An operand in f32 or bf16 is rounded on the way into shared memory
// — quantize-on-load — to the format the spec asks for:
//   FP8:  E4M3 with one f32 scale per 1 x 128 tile of op(A) along K, and per 128 x 128 block of a weight
//         op(B) (B_BLOCKS) or 1 x 128 tile of an activation op(B); scale = max(amax, 1e-4) / 448, values
//         x / scale rounded to nearest-even and saturated (DeepSeek-V3's recipe). m16n8k32 e4m3 MMAs sum one
//         128-deep K tile in f32, and the partial sums are promoted into the f32 accumulators times
//         scale_a * scale_b once per K tile (every 128 of K).
//   BF16: round-to-nearest-even bf16, m16n8k16 MMAs accumulating in f32.
// An overwritten output is rounded to bf16 (the storage format of GEMM outputs), an accumulated one is not.
// Both formats use the same byte layout: a K tile is 128 bytes per row, rows padded to 144 bytes so the
// fragment loads below hit 32 distinct banks.
static_assert(BM == 64 && BN == 128 && THREADS == 256, "8 warps as 2 x 4, each a 32 x 32 sub-tile");
constexpr int KT = FP8 ? 128 : 64;  // elements of K per tile (128 bytes)
constexpr int ROW_BYTES = 144;

__device__ __forceinline__ u32 pack_fp8x4(float a, float b, float c, float d) {
  u16 lo, hi;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(lo) : "f"(b), "f"(a));
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(hi) : "f"(d), "f"(c));
  return (u32)lo | ((u32)hi << 16);
}

__device__ __forceinline__ u32 pack_bf16x2(float a, float b) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(b), "f"(a));
  return r;
}

__device__ __forceinline__ float round_bf16(float x) {
  u16 h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
  return __uint_as_float((u32)h << 16);
}

__device__ __forceinline__ void mma(float* d, const u32* a, const u32* b) {
  if (FP8) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// Loads ROWS x KT elements of a K-major operand view X(r, p) into shared memory as bytes, rounding them.
// KMAJOR: element (r, p) at X[r * LD + p] (else X[p * LD + r]). Each thread owns PER consecutive p of one
// row. Scales: per row (TILES) or one per block (BLOCK) into `scale`. An e4m3 operand's scales are `S`:
// the stored matrix [R, C] (R, C = rows, k when KMAJOR, else k, rows) has them in row tiles [R, C/128]
// (KMAJOR), column tiles [R/128, C] (else), or blocks [R/128, C/128] (BLOCK), rounded up.
template <int ROWS, int LD, bool KMAJOR, bool BLOCK, typename TX>
__device__ __forceinline__ void load_operand(const TX* __restrict__ X, const float* __restrict__ S, int rows,
                                             int k, int r0, int k0, u8* __restrict__ dst,
                                             float* __restrict__ scale, float* __restrict__ red) {
  constexpr int CHUNKS = THREADS / ROWS;  // threads per row
  constexpr int PER = KT / CHUNKS;        // elements per thread
  const int tid = threadIdx.x;
  const int r = KMAJOR ? tid / CHUNKS : tid % ROWS;
  const int q = KMAJOR ? tid % CHUNKS : tid / ROWS;
  const int gr = r0 + r;
  if constexpr (is_e4m3<TX>::value) {
    // Bytes as they are: four at a time from a K-major operand whose rows are word-aligned, else one
    // by one (a transposed operand's run along K strides across rows; a ragged edge reads zeros).
    const u8* bytes = reinterpret_cast<const u8*>(X);
    const bool words = KMAJOR && LD % 4 == 0 && (reinterpret_cast<u64>(bytes) & 3) == 0;
    const u8* src = bytes + (KMAJOR ? (i64)gr * LD : (i64)gr);
    u8* row = dst + r * ROW_BYTES + q * PER;
#pragma unroll
    for (int j = 0; j < PER; j += 4) {
      const int gp = k0 + q * PER + j;
      u32 w = 0;
      if (words && gr < rows && gp + 3 < k) {
        w = *reinterpret_cast<const u32*>(src + gp);
      } else if (gr < rows) {
#pragma unroll
        for (int i = 0; i < 4; ++i)
          if (gp + i < k) w |= (u32)src[KMAJOR ? gp + i : (i64)(gp + i) * LD] << (8 * i);
      }
      *reinterpret_cast<u32*>(row + j) = w;
    }
    if (q == 0) {
      float s = 1.0f;
      if (gr < rows) {
        const int sr = KMAJOR ? gr : k0, sc = KMAJOR ? k0 : gr, cols = KMAJOR ? k : rows;
        const i64 ct = (cols + KT - 1) / KT;
        s = S[BLOCK ? (sr / KT) * ct + sc / KT : (KMAJOR ? sr * ct + sc / KT : (i64)(sr / KT) * cols + sc)];
      }
      scale[r] = s;
    }
  } else {
    float v[PER];
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const int gp = k0 + q * PER + j;
      v[j] = 0.0f;
      if (gr < rows && gp < k) v[j] = KMAJOR ? (float)X[(i64)gr * LD + gp] : (float)X[(i64)gp * LD + gr];
    }
    float s = 1.0f;
    if (FP8) {
      float amax = 0.0f;
#pragma unroll
      for (int j = 0; j < PER; ++j) amax = fmaxf(amax, fabsf(v[j]));
      red[q * ROWS + r] = amax;
      __syncthreads();
      if (BLOCK) {
        // One scale for the whole ROWS x KT block: every thread reduces the same values in the same order.
        float m = 0.0f;
        for (int i = 0; i < THREADS; ++i) m = fmaxf(m, red[i]);
        amax = m;
      } else {
        amax = 0.0f;
#pragma unroll
        for (int c = 0; c < CHUNKS; ++c) amax = fmaxf(amax, red[c * ROWS + r]);
      }
      s = fp8_scale(amax);
      if (q == 0) scale[r] = s;
      __syncthreads();  // red is reused by the next operand
    }
    u8* row = dst + r * ROW_BYTES;
    if (FP8) {
#pragma unroll
      for (int j = 0; j < PER; j += 4)
        *reinterpret_cast<u32*>(row + q * PER + j) = pack_fp8x4(v[j] / s, v[j + 1] / s, v[j + 2] / s, v[j + 3] / s);
    } else {
#pragma unroll
      for (int j = 0; j < PER; j += 2) *reinterpret_cast<u32*>(row + 2 * (q * PER + j)) = pack_bf16x2(v[j], v[j + 1]);
    }
  }
}

// SA, SB: the scales of an e4m3 A or B (unused, and null, for one quantized on load).
template <typename XA, typename XB, typename XC>
__device__ __forceinline__ void gemm_tile(const XA* __restrict__ A, const float* __restrict__ SA,
                                          const XB* __restrict__ B, const float* __restrict__ SB,
                                          XC* __restrict__ C, int m, int n, int k, int m0, int n0) {
  __shared__ __align__(16) u8 As[BM * ROW_BYTES];
  __shared__ __align__(16) u8 Bs[BN * ROW_BYTES];
  __shared__ float sa[BM], sb[BN], red[THREADS];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wm = warp / 4, wn = warp % 4;  // warp tile origin: (wm * 32, wn * 32)
  const int g = lane >> 2, tq = lane & 3;
  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.0f;
  for (int k0 = 0; k0 < k; k0 += KT) {
    load_operand<BM, LDA, !TA, false>(A, SA, m, k, m0, k0, As, sa, red);
    load_operand<BN, LDB, TB, B_BLOCKS>(B, SB, n, k, n0, k0, Bs, sb, red);
    __syncthreads();
    float part[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int c = 0; c < 4; ++c) part[i][j][c] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < 128; kk += 32) {
      u32 af[2][4], bfr[4][2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const u8* base = As + (wm * 32 + i * 16 + g) * ROW_BYTES + kk + tq * 4;
        af[i][0] = *reinterpret_cast<const u32*>(base);
        af[i][1] = *reinterpret_cast<const u32*>(base + 8 * ROW_BYTES);
        af[i][2] = *reinterpret_cast<const u32*>(base + 16);
        af[i][3] = *reinterpret_cast<const u32*>(base + 8 * ROW_BYTES + 16);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const u8* base = Bs + (wn * 32 + j * 8 + g) * ROW_BYTES + kk + tq * 4;
        bfr[j][0] = *reinterpret_cast<const u32*>(base);
        bfr[j][1] = *reinterpret_cast<const u32*>(base + 16);
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma(FP8 ? part[i][j] : acc[i][j], af[i], bfr[j]);
    }
    if (FP8) {
      // Promotion: fold this K tile's partial sums into the f32 accumulators with both scales.
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int c = 0; c < 4; ++c) {
            const int r = wm * 32 + i * 16 + g + (c >= 2 ? 8 : 0);
            const int col = wn * 32 + j * 8 + tq * 2 + (c & 1);
            acc[i][j][c] += part[i][j][c] * sa[r] * (B_BLOCKS ? sb[0] : sb[col]);
          }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int gi = m0 + wm * 32 + i * 16 + g + (c >= 2 ? 8 : 0);
        const int gj = n0 + wn * 32 + j * 8 + tq * 2 + (c & 1);
        if (gi < m && gj < n) {
          XC* out = C + (i64)gi * LDC + gj;
          *out = ACCUMULATE ? *out + acc[i][j][c] : round_bf16(acc[i][j][c]);
        }
      }
}

// The same over operands quantized on load (no scales arrive with them).
template <typename XA, typename XB, typename XC>
__device__ __forceinline__ void gemm_tile(const XA* __restrict__ A, const XB* __restrict__ B, XC* __restrict__ C,
                                          int m, int n, int k, int m0, int n0) {
  gemm_tile(A, (const float*)nullptr, B, (const float*)nullptr, C, m, n, k, m0, n0);
}

// C[M, N] (+)= op(A) . op(B): one block per BM x BN tile of C, grid (ceil(M / BM), ceil(N / BN)).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) gemm(const T0* __restrict__ a, const T1* __restrict__ b,
                                                      T2* __restrict__ c) {
  gemm_tile(a, b, c, M, N, K, blockIdx.x * BM, blockIdx.y * BN);
}
