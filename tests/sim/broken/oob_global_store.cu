// out-of-bounds: a bounds check written `<=` instead of `<`, so thread n stores one element past
// the end of an n-element buffer. Run with 64 threads, n = 32 and a 128-byte `out`.
// The twin (-DFIXED) uses `<`.
extern "C" __global__ void oob_global_store(float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
#ifdef FIXED
    if (i < n) out[i] = (float)i;
#else
    if (i <= n) out[i] = (float)i;  // BUG: i == n is one past the end
#endif
}
