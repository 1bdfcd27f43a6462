// race: 64 threads (two warps); each writes its own slot, then reads the mirrored slot 63 - t,
// which a thread of the *other* warp writes, with no barrier in between. (The first phase, zeroing
// the array behind a barrier, is there so the read is never of uninitialized memory.) The twin
// (-DFIXED) puts __syncthreads() between the write and the read.
extern "C" __global__ void race_shared(int* out) {
    __shared__ int s[64];
    unsigned t = threadIdx.x;
    s[t] = 0;
    __syncthreads();
    s[t] = t + 1;
#ifdef FIXED
    __syncthreads();
#endif
    out[t] = s[63 - t];  // BUG without FIXED: slot 63 - t is written by the other warp concurrently
}
