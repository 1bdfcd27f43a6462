// The global gradient norm over N elements, deterministic:
//   grad_norm_partials: block c sums g^2 (f64) over chunk c of CHUNK elements; partials[c] = the sum (f32);
//   grad_norm_finish:   one block sums the partials (f64) in a fixed order; norm[0] = sqrt of the total.
extern "C" __global__ void __launch_bounds__(GRAD_NORM_PARTIALS_THREADS) grad_norm_partials(const T0* __restrict__ grad,
                                                                    T1* __restrict__ partials,
                                                                    T2* __restrict__ norm) {
  __shared__ double scratch[33];
  chunk_sum_squares(grad, partials, N, scratch);
}

extern "C" __global__ void __launch_bounds__(GRAD_NORM_FINISH_THREADS) grad_norm_finish(const T0* __restrict__ grad,
                                                                   T1* __restrict__ partials,
                                                                   T2* __restrict__ norm) {
  __shared__ double scratch[33];
  const double s = sum_of_parts<CHUNKS>(partials, scratch);
  if (threadIdx.x == 0) norm[0] = (float)sqrt(s);
}
