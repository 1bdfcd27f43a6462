// h = silu(g) * u, silu(g) = g / (1 + exp(-g)).
extern "C" __global__ void __launch_bounds__(SWIGLU_THREADS) swiglu(const T0* __restrict__ g, const T1* __restrict__ u,
                                                         T2* __restrict__ h) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) {
    const float x = g[i];
    h[i] = x / (1.0f + expf(-x)) * u[i];
  }
}
