// dx += dy * w * alpha * (1 - tanh(alpha x)^2), one block per row.
extern "C" __global__ void __launch_bounds__(DYT_BWD_DX_THREADS) dyt_bwd_dx(const T0* __restrict__ x, const T1* __restrict__ w,
                                                                const T2* __restrict__ alpha,
                                                                const T3* __restrict__ dy, T4* __restrict__ dx,
                                                                T5* __restrict__ dw, T6* __restrict__ db,
                                                                T7* __restrict__ dalpha) {
  const i64 r = blockIdx.x;
  const float a = alpha[0];
  for (int c = threadIdx.x; c < D; c += THREADS) {
    const float t = tanhf(a * x[r * IN_STRIDE + c]);
    dx[r * IN_STRIDE + c] += dy[r * D + c] * w[c] * a * (1.0f - t * t);
  }
}

// dw += sum dy * tanh(alpha x), db += sum dy, dalpha += sum dy * w * x * (1 - tanh^2): one block of 1024
// threads; each thread owns columns c = tid, tid + 1024, ... over all rows, then a fixed-order block sum.
extern "C" __global__ void __launch_bounds__(DYT_BWD_PARAMS_THREADS) dyt_bwd_params(const T0* __restrict__ x,
                                                                 const T1* __restrict__ w,
                                                                 const T2* __restrict__ alpha,
                                                                 const T3* __restrict__ dy, T4* __restrict__ dx,
                                                                 T5* __restrict__ dw, T6* __restrict__ db,
                                                                 T7* __restrict__ dalpha) {
  __shared__ float scratch[33];
  const float a = alpha[0];
  float da = 0.0f;
  for (int c = threadIdx.x; c < D; c += 1024) {
    float sw = 0.0f, sb = 0.0f;
    for (i64 r = 0; r < ROWS; ++r) {
      const float xv = x[r * IN_STRIDE + c], g = dy[r * D + c], t = tanhf(a * xv);
      sw += g * t;
      sb += g;
      da += g * w[c] * xv * (1.0f - t * t);
    }
    dw[c] += sw;
    db[c] += sb;
  }
  da = block_sum(da, scratch);
  if (threadIdx.x == 0) dalpha[0] += da;
}
