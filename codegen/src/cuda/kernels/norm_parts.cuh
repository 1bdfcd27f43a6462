// Sums of squares by chunk, and a sum of such partial sums, deterministic (f64 sums in a fixed order,
// whatever the grid): the two halves of the global gradient norm (grad_norm), which a parallel job runs
// apart (sum_squares, sum_parts) to add the partials of other ranks' parameters in between.

// Block c: partials[c] = sum over chunk c (CHUNK elements of n) of x^2, summed in f64, stored f32.
template <typename X, typename P>
__device__ __forceinline__ void chunk_sum_squares(const X* __restrict__ x, P* __restrict__ partials, i64 n,
                                                  double* scratch /* [33] */) {
  const i64 base = (i64)blockIdx.x * CHUNK;
  double s = 0.0;
  for (i64 i = base + threadIdx.x; i < base + CHUNK && i < n; i += blockDim.x) s += (double)x[i] * (double)x[i];
  s = block_sum_f64(s, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = (float)s;
}

// The sum of PARTS partials (f64), on one block of 1024 threads: thread t sums a contiguous run, then the
// block sums the runs in thread order. Every thread gets the total.
template <i64 PARTS, typename P>
__device__ __forceinline__ double sum_of_parts(const P* __restrict__ partials, double* scratch /* [33] */) {
  constexpr i64 PER = (PARTS + 1023) / 1024;
  double s = 0.0;
  for (i64 c = threadIdx.x * PER; c < (threadIdx.x + 1) * PER && c < PARTS; ++c) s += (double)partials[c];
  return block_sum_f64(s, scratch);
}
