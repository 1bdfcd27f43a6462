// out[t] += sum over slots (in slot order) of weights[t, slot] * yp[inv[t * TOP_K + slot]]: the weighted
// un-permute of the routed experts' outputs onto the shared experts' (already in out). One block per token.
extern "C" __global__ void __launch_bounds__(COMBINE_THREADS) combine(const T0* __restrict__ inv,
                                                         const T1* __restrict__ weights,
                                                         const T2* __restrict__ yp, T3* __restrict__ out) {
  const i64 t = blockIdx.x;
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    float acc = out[t * D + c];
    for (int k = 0; k < TOP_K; ++k)
      acc += weights[t * TOP_K + k] * yp[(i64)as_index(inv[t * TOP_K + k]) * D + c];
    out[t * D + c] = acc;
  }
}
