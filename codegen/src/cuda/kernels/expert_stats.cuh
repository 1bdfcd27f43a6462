// One MoE layer's routing statistics over a micro-batch, added to stats = [counts (EXPERTS) | entropy | tokens]:
// each chosen expert counted (integer counts in shared memory: the atomics commute, deterministic), and each
// token's entropy of its scores normalized to sum to 1, over ln EXPERTS (a warp per token, f64, summed in a
// fixed order). One block of 256 threads (eight warps).
extern "C" __global__ void __launch_bounds__(EXPERT_STATS_THREADS) expert_stats(const T0* __restrict__ idx,
                                                               const T1* __restrict__ scores,
                                                               T2* __restrict__ stats) {
  __shared__ u32 counts[EXPERTS];
  __shared__ double scratch[33];
  for (int e = threadIdx.x; e < EXPERTS; e += 256) counts[e] = 0;
  __syncthreads();
  for (i64 k = threadIdx.x; k < (i64)TOKENS * TOP_K; k += 256) atomicAdd(&counts[expert_index(idx[k], EXPERTS)], 1u);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const double ln_e = EXPERTS > 1 ? log((double)EXPERTS) : 1.0;
  double entropy = 0.0;  // lane 0's running sum over its warp's tokens
  for (i64 t = warp; t < TOKENS; t += 8) {
    const float* row = scores + t * EXPERTS;
    double z = 0.0;
    for (int e = lane; e < EXPERTS; e += 32) z += (double)row[e];
    z = warp_sum_f64(z);
    double h = 0.0;
    for (int e = lane; e < EXPERTS; e += 32) {
      const double p = (double)row[e] / z;
      if (p > 0.0) h -= p * log(p);
    }
    h = warp_sum_f64(h);
    if (lane == 0) entropy += h / ln_e;
  }
  entropy = block_sum_f64(entropy, scratch);
  __syncthreads();
  for (int e = threadIdx.x; e < EXPERTS; e += 256) stats[e] += (float)counts[e];
  if (threadIdx.x == 0) {
    stats[EXPERTS] = (float)((double)stats[EXPERTS] + entropy);
    stats[EXPERTS + 1] += (float)TOKENS;
  }
}
