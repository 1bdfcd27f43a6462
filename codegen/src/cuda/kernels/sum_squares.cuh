// Sums of squares over N elements by chunks of CHUNK: partials[c] (the first half of grad_norm).
extern "C" __global__ void __launch_bounds__(SUM_SQUARES_THREADS) sum_squares(const T0* __restrict__ x,
                                                                             T1* __restrict__ partials) {
  __shared__ double scratch[33];
  chunk_sum_squares(x, partials, N, scratch);
}
