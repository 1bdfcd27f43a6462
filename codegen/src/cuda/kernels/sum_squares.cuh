// Sums of squares over N elements by chunks of CHUNK, deterministic: block c sums x^2 (f64) over
// chunk c; partials[c] = the sum (f32). The first half of grad_norm, for a parallel job that adds
// the partials of its ranks' shards before taking the root (sum_parts).
extern "C" __global__ void __launch_bounds__(SUM_SQUARES_THREADS) sum_squares(const T0* __restrict__ x,
                                                                             T1* __restrict__ partials) {
  __shared__ double scratch[33];
  const i64 base = (i64)blockIdx.x * CHUNK;
  double s = 0.0;
  for (i64 i = base + threadIdx.x; i < base + CHUNK && i < N; i += 256) s += (double)x[i] * (double)x[i];
  s = block_sum_f64(s, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = (float)s;
}
