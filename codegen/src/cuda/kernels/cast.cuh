// y[i] = x[i] for i < N, converted to y's storage type (rounded to nearest-even into bf16).
extern "C" __global__ void __launch_bounds__(CAST_THREADS) cast(const T0* __restrict__ x, T1* __restrict__ y) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) y[i] = (float)x[i];
}
