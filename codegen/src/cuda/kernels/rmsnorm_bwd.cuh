// dx (row stride IN_STRIDE) += rstd * (g - xhat * mean(g * xhat)), g = dy * w, xhat = x * rstd: one block per row.
extern "C" __global__ void __launch_bounds__(RMSNORM_BWD_DX_THREADS) rmsnorm_bwd_dx(const T0* __restrict__ x,
                                                                    const T1* __restrict__ w,
                                                                    const T2* __restrict__ rstd,
                                                                    const T3* __restrict__ dy,
                                                                    T4* __restrict__ dx, T5* __restrict__ dw) {
  __shared__ float scratch[33];
  const i64 r = blockIdx.x;
  const T0* xr = x + r * IN_STRIDE;
  const T3* dyr = dy + r * D;
  const float rs = rstd[r];
  float dot = 0.0f;
  for (int c = threadIdx.x; c < D; c += THREADS) dot += dyr[c] * w[c] * xr[c] * rs;
  dot = block_sum(dot, scratch) / (float)D;
  for (int c = threadIdx.x; c < D; c += THREADS) dx[r * IN_STRIDE + c] += rs * (dyr[c] * w[c] - xr[c] * rs * dot);
}

// dw[c] += sum over rows of dy * x * rstd. A block owns 32 columns; its 8 warps take every 8th row and
// their partial sums are added in warp order: deterministic.
extern "C" __global__ void __launch_bounds__(RMSNORM_BWD_DW_THREADS) rmsnorm_bwd_dw(const T0* __restrict__ x,
                                                                const T1* __restrict__ w,
                                                                const T2* __restrict__ rstd,
                                                                const T3* __restrict__ dy,
                                                                T4* __restrict__ dx, T5* __restrict__ dw) {
  __shared__ float part[8][33];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int c = blockIdx.x * 32 + lane;
  float acc = 0.0f;
  if (c < D)
    for (i64 r = warp; r < ROWS; r += 8) acc += dy[r * D + c] * x[r * IN_STRIDE + c] * rstd[r];
  part[warp][lane] = acc;
  __syncthreads();
  if (warp == 0 && c < D) {
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) s += part[k][lane];
    dw[c] += s;
  }
}
