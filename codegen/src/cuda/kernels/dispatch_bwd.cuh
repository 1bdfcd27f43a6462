// dx[t] += sum over slots (in slot order) of dxp[inv[t * TOP_K + slot]]: one block per token.
extern "C" __global__ void __launch_bounds__(DISPATCH_BWD_THREADS) dispatch_bwd(const T0* __restrict__ inv,
                                                              const T1* __restrict__ dxp,
                                                              T2* __restrict__ dx) {
  const i64 t = blockIdx.x;
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    float acc = dx[t * D + c];
    for (int k = 0; k < TOP_K; ++k) acc += dxp[(i64)as_index(inv[t * TOP_K + k]) * D + c];
    dx[t * D + c] = acc;
  }
}
