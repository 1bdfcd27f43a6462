// y[i] += ALPHA * x[i] for i < N.
extern "C" __global__ void __launch_bounds__(ADD_SCALED_THREADS) add_scaled(const T0* __restrict__ x, T1* __restrict__ y) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) y[i] += ALPHA * x[i];
}
