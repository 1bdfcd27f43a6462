// y[r, :] = W_e x[r, :] for the rows r of expert e: y[rows_e, EN] = x[rows_e, EK] . W_e[EN, EK]^T.
extern "C" __global__ void __launch_bounds__(GROUPED_FORWARD_THREADS) grouped_forward(const T0* __restrict__ offsets,
                                                                 const T1* __restrict__ x,
                                                                 const T2* __restrict__ w,
                                                                 T3* __restrict__ y) {
  int e, r0, rows, m0;
  if (!expert_tile(offsets, blockIdx.x, e, r0, rows, m0)) return;
  gemm_tile(x + (i64)r0 * EK, w + (i64)e * EN * EK, y + (i64)r0 * EN, rows, EN, EK, m0, blockIdx.y * BN);
}
