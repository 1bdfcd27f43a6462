// Aux-loss-free balancing from the step's counts (the first EXPERTS values of stats): each bias moves
// GAMMA toward balance, bias[e] += GAMMA * sign(mean(counts) - counts[e]) (0 when equal), the mean in f64;
// nothing when the step guard (step_guard.cuh) holds the step back.
extern "C" __global__ void __launch_bounds__(BIAS_UPDATE_THREADS) bias_update(const T0* __restrict__ s,
                                                              const T1* __restrict__ norm,
                                                              const T2* __restrict__ stats,
                                                              T3* __restrict__ bias) {
  if (!update_applies(s, norm)) return;
  __shared__ double scratch[33];
  double total = 0.0;
  for (int e = threadIdx.x; e < EXPERTS; e += 1024) total += (double)stats[e];
  const double mean = block_sum_f64(total, scratch) / (double)EXPERTS;
  for (int e = threadIdx.x; e < EXPERTS; e += 1024) {
    const double diff = mean - (double)stats[e];
    bias[e] += GAMMA * (diff > 0.0 ? 1.0f : (diff < 0.0 ? -1.0f : 0.0f));
  }
}
