// uninitialized: a 64-int __shared__ array, 32 threads; each writes s[t] only, then reads s[t + 32],
// which nobody wrote. The twin (-DFIXED) writes both halves first.
extern "C" __global__ void uninit_shared(int* out) {
    __shared__ int s[64];
    unsigned t = threadIdx.x;
    s[t] = t;
#ifdef FIXED
    s[t + 32] = -(int)t;
#endif
    __syncthreads();
    out[t] = s[t + 32];  // BUG without FIXED: the upper half was never written
}
