// Deliberate bugs for the sanitizer: an off-by-one bounds check (i <= n) makes thread n store one
// element past the end of `out` (n elements), or load one element past the end of `in`.
extern "C" __global__ void oob_store(float* out, unsigned n) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = (float)i;
}

extern "C" __global__ void oob_load(const float* in, float* out, unsigned n) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i + 1];
}
