// y[r, :] = W_e x[r, :] for the rows r of expert e over E4M3 operands: x in row tiles [ROWS, EK / 128];
// W_e's WB scales apiece (128 x 128 blocks when B_BLOCKS, else 1 x 128 tiles along K), expert after expert.
extern "C" __global__ void __launch_bounds__(GROUPED_FORWARD_THREADS) grouped_forward(const T0* __restrict__ offsets,
                                                                 const T1* __restrict__ x,
                                                                 const T2* __restrict__ x_scales,
                                                                 const T3* __restrict__ w,
                                                                 const T4* __restrict__ w_scales,
                                                                 T5* __restrict__ y) {
  constexpr i64 XT = (EK + 127) / 128;
  int e, r0, rows, m0;
  if (!expert_tile(offsets, blockIdx.x, e, r0, rows, m0)) return;
  gemm_tile(x + (i64)r0 * EK, x_scales + r0 * XT, w + (i64)e * EN * EK, w_scales + e * WB, y + (i64)r0 * EN, rows,
            EN, EK, m0, blockIdx.y * BN);
}
