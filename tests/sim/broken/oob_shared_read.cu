// out-of-bounds: every thread reads its neighbour's slot s[t + k] of a 32-float __shared__ array;
// with k = 1 thread 31 reads s[32], past the end of the array (and of the block's shared memory:
// it is the module's only shared variable and --smem is 0). The twin (-DFIXED) wraps the index.
extern "C" __global__ void oob_shared_read(float* out, int k) {
    __shared__ float s[32];
    unsigned t = threadIdx.x;
    s[t] = (float)t;
    __syncthreads();
#ifdef FIXED
    out[t] = s[(t + k) % 32];
#else
    out[t] = s[t + k];  // BUG: t + k == 32 for the last thread
#endif
}
