// y[i] = a * x[i] + y[i] over a grid-stride loop, with the bounds check on n (not a multiple of the
// block, and smaller than y's allocation: the elements past n must stay as they were).
extern "C" __global__ void saxpy(int n, float a, const float* __restrict__ x, float* __restrict__ y) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        y[i] = a * x[i] + y[i];
    }
}
