// Combine backward. dyp[row] = weights[pair] * dout[token] with pair = perm[row] (one block per row);
// dweights[pair] += dout[token] . yp[inv[pair]] (one warp per pair).
extern "C" __global__ void __launch_bounds__(COMBINE_BWD_ROWS_THREADS) combine_bwd_rows(const T0* __restrict__ perm,
                                                                  const T1* __restrict__ inv,
                                                                  const T2* __restrict__ weights,
                                                                  const T3* __restrict__ yp,
                                                                  const T4* __restrict__ dout,
                                                                  T5* __restrict__ dyp,
                                                                  T6* __restrict__ dweights) {
  const i64 row = blockIdx.x;
  const i64 pair = as_index(perm[row]);
  const i64 t = pair / TOP_K;
  const float w = weights[pair];
  for (int c = threadIdx.x; c < D; c += blockDim.x) dyp[row * D + c] = w * dout[t * D + c];
}

extern "C" __global__ void __launch_bounds__(COMBINE_BWD_WEIGHTS_THREADS) combine_bwd_weights(const T0* __restrict__ perm,
                                                                     const T1* __restrict__ inv,
                                                                     const T2* __restrict__ weights,
                                                                     const T3* __restrict__ yp,
                                                                     const T4* __restrict__ dout,
                                                                     T5* __restrict__ dyp,
                                                                     T6* __restrict__ dweights) {
  const int lane = threadIdx.x & 31;
  const i64 pair = (i64)blockIdx.x * 8 + (threadIdx.x >> 5);
  if (pair >= N) return;
  const i64 t = pair / TOP_K, row = as_index(inv[pair]);
  float dot = 0.0f;
  for (int c = lane; c < D; c += 32) dot += dout[t * D + c] * yp[row * D + c];
  dot = warp_sum(dot);
  if (lane == 0) dweights[pair] += dot;
}
