// Sequence-wise balance loss: loss += mean over sequences of ALPHA * sum_e f_e * P_e, with
// f_e = EXPERTS / (TOP_K * SEQ) * #(tokens choosing e) and P_e = mean_t s'_{t,e}, s' = s / sum_e s (sigmoid)
// or s (softmax). One block: deterministic (integer counts, fixed-order sums).
extern "C" __global__ void __launch_bounds__(BALANCE_LOSS_THREADS) balance_loss(const T0* __restrict__ scores,
                                                              const T1* __restrict__ idx,
                                                              T2* __restrict__ loss) {
  __shared__ u32 count[EXPERTS];
  __shared__ float zt[ZCHUNK];
  __shared__ float scratch[33];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr int EPT = (EXPERTS + 255) / 256;
  double total = 0.0;
  for (int sq = 0; sq < BATCH; ++sq) {
    for (int e = threadIdx.x; e < EXPERTS; e += 256) count[e] = 0;
    __syncthreads();
    for (int k = threadIdx.x; k < SEQ * TOP_K; k += 256) {
      const int e = expert_index(idx[(i64)sq * SEQ * TOP_K + k], EXPERTS);
      atomicAdd(&count[e], 1u);
    }
    float p[EPT];
#pragma unroll
    for (int j = 0; j < EPT; ++j) p[j] = 0.0f;
    for (int t0 = 0; t0 < SEQ; t0 += ZCHUNK) {
      for (int t = t0 + warp; t < SEQ && t < t0 + ZCHUNK; t += 8) {
        float z = 1.0f;
        if (SIGMOID) {
          z = 0.0f;
          for (int e = lane; e < EXPERTS; e += 32) z += scores[((i64)sq * SEQ + t) * EXPERTS + e];
          z = warp_sum(z);
        }
        if (lane == 0) zt[t - t0] = z;
      }
      __syncthreads();
#pragma unroll
      for (int j = 0; j < EPT; ++j) {
        const int e = threadIdx.x + 256 * j;
        if (e < EXPERTS)
          for (int t = t0; t < SEQ && t < t0 + ZCHUNK; ++t)
            p[j] += scores[((i64)sq * SEQ + t) * EXPERTS + e] / zt[t - t0] / (float)SEQ;
      }
      __syncthreads();
    }
    float part = 0.0f;
#pragma unroll
    for (int j = 0; j < EPT; ++j) {
      const int e = threadIdx.x + 256 * j;
      if (e < EXPERTS) part += (float)count[e] * ((float)EXPERTS / (float)(TOP_K * SEQ)) * p[j];
    }
    part = block_sum(part, scratch);
    total += (double)(ALPHA * part);
    __syncthreads();
  }
  if (threadIdx.x == 0) loss[0] += (float)(total / (double)BATCH);
}
