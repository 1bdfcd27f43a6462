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
