// C[M, N] (+)= op(A) . op(B) over E4M3 operands with their scales: one block per BM x BN tile of C, grid
// (ceil(M / BM), ceil(N / BN)).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) gemm(const T0* __restrict__ a, const T1* __restrict__ a_scales,
                                                      const T2* __restrict__ b, const T3* __restrict__ b_scales,
                                                      T4* __restrict__ c) {
  gemm_tile(a, a_scales, b, b_scales, c, M, N, K, blockIdx.x * BM, blockIdx.y * BN);
}
