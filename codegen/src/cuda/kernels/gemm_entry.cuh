// C[M, N] (+)= op(A) . op(B): one block per BM x BN tile of C, grid (ceil(M / BM), ceil(N / BN)).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) gemm(const T0* __restrict__ a, const T1* __restrict__ b,
                                                      T2* __restrict__ c) {
  gemm_tile(a, b, c, M, N, K, blockIdx.x * BM, blockIdx.y * BN);
}
