// Aux-loss-free balancing. Integer counts: the atomics commute, so the result is deterministic.
extern "C" __global__ void __launch_bounds__(256) moe_bias_count(const float* __restrict__ idx, u32* __restrict__ counts,
                                                                float* __restrict__ bias, float gamma) {
  const i64 k = (i64)blockIdx.x * 256 + threadIdx.x;
  if (k >= (i64)TOKENS * TOP_K) return;
  atomicAdd(&counts[expert_index(idx[k], EXPERTS)], 1u);
}

extern "C" __global__ void __launch_bounds__(1024) moe_bias_update(const float* __restrict__ idx,
                                                                  u32* __restrict__ counts, float* __restrict__ bias,
                                                                  float gamma) {
  __shared__ double scratch[33];
  double total = 0.0;
  for (int e = threadIdx.x; e < EXPERTS; e += 1024) total += (double)counts[e];
  const double mean = block_sum_f64(total, scratch) / (double)EXPERTS;
  __syncthreads();
  for (int e = threadIdx.x; e < EXPERTS; e += 1024) {
    const double diff = mean - (double)counts[e];
    bias[e] += gamma * (diff > 0.0 ? 1.0f : (diff < 0.0 ? -1.0f : 0.0f));
    counts[e] = 0;
  }
}
