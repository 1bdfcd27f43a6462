// out[0] = the sum of PARTS partial sums, or its square root with ROOT (grad_norm's second half).
extern "C" __global__ void __launch_bounds__(SUM_PARTS_THREADS) sum_parts(const T0* __restrict__ partials,
                                                                         T1* __restrict__ out) {
  __shared__ double scratch[33];
  const double s = sum_of_parts<PARTS>(partials, scratch);
  if (threadIdx.x == 0) out[0] = ROOT ? (float)sqrt(s) : (float)s;
}
