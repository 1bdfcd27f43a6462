// Router backward, one warp per token: the weight gradients go to the chosen scores (through the
// normalization when NORMALIZE: dscore_c += ROUTE_SCALE / S * (g_c - sum_j g_j s_j / S)), added to the
// balance loss's dscores in place; then through sigmoid (ds * s * (1 - s)) or softmax to dlogits.
extern "C" __global__ void __launch_bounds__(ROUTER_BWD_THREADS) router_bwd(const T0* __restrict__ scores,
                                                            const T1* __restrict__ idx,
                                                            const T2* __restrict__ dweights,
                                                            T3* __restrict__ dscores, T4* __restrict__ dlogits) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const i64 t = (i64)blockIdx.x * 8 + warp;
  if (t >= TOKENS) return;
  const float* s = scores + t * EXPERTS;
  float* ds = dscores + t * EXPERTS;
  float sum = 0.0f, mean = 0.0f;
  if (NORMALIZE) {
    for (int k = 0; k < TOP_K; ++k) sum += s[expert_index(idx[t * TOP_K + k], EXPERTS)];
    sum += 1e-20f;
    for (int k = 0; k < TOP_K; ++k) mean += dweights[t * TOP_K + k] * (s[expert_index(idx[t * TOP_K + k], EXPERTS)] / sum);
  }
  // Each lane owns experts lane, lane + 32, ... and adds the slots that name them in slot order: an
  // expert named twice (never by `router`) gets both slots' gradients, without a race.
  for (int e = lane; e < EXPERTS; e += 32) {
    float acc = ds[e];
    for (int k = 0; k < TOP_K; ++k) {
      if (expert_index(idx[t * TOP_K + k], EXPERTS) != e) continue;
      const float g = dweights[t * TOP_K + k];
      acc += NORMALIZE ? ROUTE_SCALE / sum * (g - mean) : ROUTE_SCALE * g;
    }
    ds[e] = acc;
  }
  __syncwarp();
  if (SIGMOID) {
    for (int e = lane; e < EXPERTS; e += 32) dlogits[t * EXPERTS + e] += ds[e] * s[e] * (1.0f - s[e]);
  } else {
    float dot = 0.0f;
    for (int e = lane; e < EXPERTS; e += 32) dot += ds[e] * s[e];
    dot = warp_sum(dot);
    for (int e = lane; e < EXPERTS; e += 32) dlogits[t * EXPERTS + e] += s[e] * (ds[e] - dot);
  }
}
