// dW_e[EN, EK] += dy[rows_e, EN]^T . x[rows_e, EK]: K runs over expert e's rows; grid (EN / BM, EK / BN, EXPERTS).
extern "C" __global__ void __launch_bounds__(GROUPED_WEIGHT_GRAD_THREADS) grouped_weight_grad(const T0* __restrict__ offsets,
                                                                     const T1* __restrict__ x,
                                                                     const T2* __restrict__ dy,
                                                                     T3* __restrict__ dw) {
  const int e = blockIdx.z;
  const int r0 = as_index(offsets[e]), rows = as_index(offsets[e + 1]) - r0;
  if (rows <= 0) return;
  gemm_tile(dy + (i64)r0 * EN, x + (i64)r0 * EK, dw + (i64)e * EN * EK, EN, EK, rows, blockIdx.x * BM,
            blockIdx.y * BN);
}
