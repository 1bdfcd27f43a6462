// dx[r, :] += W_e^T dy[r, :] for the rows r of expert e: dx[rows_e, EK] += dy[rows_e, EN] . W_e[EN, EK].
extern "C" __global__ void __launch_bounds__(GROUPED_DATA_GRAD_THREADS) grouped_data_grad(const T0* __restrict__ offsets,
                                                                   const T1* __restrict__ dy,
                                                                   const T2* __restrict__ w,
                                                                   T3* __restrict__ dx) {
  int e, r0, rows, m0;
  if (!expert_tile(offsets, blockIdx.x, e, r0, rows, m0)) return;
  gemm_tile(dy + (i64)r0 * EN, w + (i64)e * EN * EK, dx + (i64)r0 * EK, rows, EK, EN, m0, blockIdx.y * BN);
}
