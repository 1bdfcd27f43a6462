// dx[r, :] += W_e^T dy[r, :] for the rows r of expert e over E4M3 operands: dy in row tiles [ROWS, EN / 128];
// W_e's WB scales apiece (128 x 128 blocks when B_BLOCKS, else 1 x 128 tiles along K), expert after expert.
extern "C" __global__ void __launch_bounds__(GROUPED_DATA_GRAD_THREADS) grouped_data_grad(const T0* __restrict__ offsets,
                                                                   const T1* __restrict__ dy,
                                                                   const T2* __restrict__ dy_scales,
                                                                   const T3* __restrict__ w,
                                                                   const T4* __restrict__ w_scales,
                                                                   T5* __restrict__ dx) {
  constexpr i64 DT = (EN + 127) / 128;
  int e, r0, rows, m0;
  if (!expert_tile(offsets, blockIdx.x, e, r0, rows, m0)) return;
  gemm_tile(dy + (i64)r0 * EN, dy_scales + r0 * DT, w + (i64)e * EN * EK, w_scales + e * WB, dx + (i64)r0 * EK,
            rows, EK, EN, m0, blockIdx.y * BN);
}
