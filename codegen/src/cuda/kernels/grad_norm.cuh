// The global gradient norm over N elements, deterministic:
//   grad_norm_partials: block c sums g^2 (f64) over chunk c of CHUNK elements; partials[c] = the sum (f32);
//   grad_norm_finish:   one block sums the partials (f64) in a fixed order; norm[0] = sqrt of the total.
extern "C" __global__ void __launch_bounds__(GRAD_NORM_PARTIALS_THREADS) grad_norm_partials(const T0* __restrict__ grad,
                                                                    T1* __restrict__ partials,
                                                                    T2* __restrict__ norm) {
  __shared__ double scratch[33];
  const i64 base = (i64)blockIdx.x * CHUNK;
  double s = 0.0;
  for (i64 i = base + threadIdx.x; i < base + CHUNK && i < N; i += 256) s += (double)grad[i] * (double)grad[i];
  s = block_sum_f64(s, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = (float)s;
}

extern "C" __global__ void __launch_bounds__(GRAD_NORM_FINISH_THREADS) grad_norm_finish(const T0* __restrict__ grad,
                                                                   T1* __restrict__ partials,
                                                                   T2* __restrict__ norm) {
  __shared__ double scratch[33];
  // Thread t sums a contiguous run of partials, then the block sums the runs in thread order.
  constexpr i64 PER = (CHUNKS + 1023) / 1024;
  double s = 0.0;
  for (i64 c = threadIdx.x * PER; c < (threadIdx.x + 1) * PER && c < CHUNKS; ++c) s += (double)partials[c];
  s = block_sum_f64(s, scratch);
  if (threadIdx.x == 0) norm[0] = (float)sqrt(s);
}
