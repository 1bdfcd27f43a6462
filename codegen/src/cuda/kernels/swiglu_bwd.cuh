// dg += dh * u * s * (1 + g * (1 - s)), du += dh * g * s, with s = sigmoid(g).
extern "C" __global__ void __launch_bounds__(SWIGLU_BWD_THREADS) swiglu_bwd(const T0* __restrict__ g, const T1* __restrict__ u,
                                                             const T2* __restrict__ dh, T3* __restrict__ dg,
                                                             T4* __restrict__ du) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) {
    const float x = g[i], s = 1.0f / (1.0f + expf(-x));
    dg[i] += dh[i] * u[i] * s * (1.0f + x * (1.0f - s));
    du[i] += dh[i] * x * s;
  }
}
