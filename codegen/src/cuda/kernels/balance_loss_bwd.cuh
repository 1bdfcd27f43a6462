// dscores += GRAD_SCALE * d(balance loss)/d(scores): one block per sequence counts its f_e, then one warp
// per token: sigmoid: c * (f_j / z - sum_e f_e s_e / z^2); softmax: c * f_j; c = GRAD_SCALE * ALPHA / (BATCH * SEQ).
extern "C" __global__ void __launch_bounds__(BALANCE_LOSS_BWD_THREADS) balance_loss_bwd(const T0* __restrict__ scores,
                                                                  const T1* __restrict__ idx,
                                                                  T2* __restrict__ dscores) {
  __shared__ u32 count[EXPERTS];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sq = blockIdx.x;
  for (int e = threadIdx.x; e < EXPERTS; e += 256) count[e] = 0;
  __syncthreads();
  for (int k = threadIdx.x; k < SEQ * TOP_K; k += 256) {
    const int e = expert_index(idx[(i64)sq * SEQ * TOP_K + k], EXPERTS);
    atomicAdd(&count[e], 1u);
  }
  __syncthreads();
  const float fscale = (float)EXPERTS / (float)(TOP_K * SEQ);
  const float c = GRAD_SCALE * ALPHA / (float)(BATCH * SEQ);
  for (int t = warp; t < SEQ; t += 8) {
    const i64 r = ((i64)sq * SEQ + t) * EXPERTS;
    if (SIGMOID) {
      float z = 0.0f, fs = 0.0f;
      for (int e = lane; e < EXPERTS; e += 32) {
        const float s = scores[r + e];
        z += s;
        fs += (float)count[e] * fscale * s;
      }
      z = warp_sum(z);
      fs = warp_sum(fs);
      for (int e = lane; e < EXPERTS; e += 32) dscores[r + e] += c * ((float)count[e] * fscale / z - fs / (z * z));
    } else {
      for (int e = lane; e < EXPERTS; e += 32) dscores[r + e] += c * ((float)count[e] * fscale);
    }
  }
}
