// One block per row: rstd = 1 / sqrt(mean(x^2) + EPS); y = w * (x * rstd).
extern "C" __global__ void __launch_bounds__(RMSNORM_THREADS) rmsnorm(const T0* __restrict__ x, const T1* __restrict__ w,
                                                             T2* __restrict__ y, T3* __restrict__ rstd) {
  __shared__ float scratch[33];
  const i64 r = blockIdx.x;
  const T0* xr = x + r * IN_STRIDE;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < D; c += THREADS) ss += xr[c] * xr[c];
  ss = block_sum(ss, scratch);
  const float rs = 1.0f / sqrtf(ss / (float)D + EPS);
  for (int c = threadIdx.x; c < D; c += THREADS) y[r * D + c] = w[c] * (xr[c] * rs);
  if (threadIdx.x == 0) rstd[r] = rs;
}
