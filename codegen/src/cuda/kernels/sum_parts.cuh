// out[0] = sum of PARTS partial sums (f64, in a fixed order), or its square root with ROOT: thread
// t sums a contiguous run of partials, then the block sums the runs in thread order.
extern "C" __global__ void __launch_bounds__(SUM_PARTS_THREADS) sum_parts(const T0* __restrict__ partials,
                                                                         T1* __restrict__ out) {
  __shared__ double scratch[33];
  constexpr i64 PER = (PARTS + 1023) / 1024;
  double s = 0.0;
  for (i64 c = threadIdx.x * PER; c < (threadIdx.x + 1) * PER && c < PARTS; ++c) s += (double)partials[c];
  s = block_sum_f64(s, scratch);
  if (threadIdx.x == 0) out[0] = ROOT ? (float)sqrt(s) : (float)s;
}
