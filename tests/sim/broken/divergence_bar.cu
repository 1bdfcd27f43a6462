// divergence: one warp (32 threads); odd and even lanes reach two different __syncthreads()
// (bar.sync 0 is `barrier.sync.aligned`, which every thread of the warp must execute as the same
// instruction, PTX ISA "barrier"). The twin (-DFIXED) has one barrier before the branch.
extern "C" __global__ void divergence_bar(int* out) {
    __shared__ int s[32];
    unsigned t = threadIdx.x;
    s[t] = t;
#ifdef FIXED
    __syncthreads();
    if (t & 1) {
        out[t] = s[t ^ 1];
    } else {
        out[t] = s[t ^ 1] + 100;
    }
#else
    if (t & 1) {
        __syncthreads();  // BUG: odd lanes here ...
        out[t] = s[t ^ 1];
    } else {
        __syncthreads();  // ... even lanes here
        out[t] = s[t ^ 1] + 100;
    }
#endif
}
