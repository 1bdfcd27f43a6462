// out[i] = a[i] + b[i] for i < N.
extern "C" __global__ void __launch_bounds__(ADD_THREADS) add(const T0* __restrict__ a, const T1* __restrict__ b,
                                                      T2* __restrict__ out) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) out[i] = a[i] + b[i];
}
