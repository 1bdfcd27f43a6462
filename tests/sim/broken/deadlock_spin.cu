// deadlock: 64 threads. Warp 0 waits at __syncthreads() and only then raises a flag; warp 1 spins
// on that flag and never reaches the barrier, so warp 0 waits for it forever and it spins forever.
// `flag` is a 4-byte zeroed input; the spin reads it atomically. The twin (-DFIXED) moves the barrier
// before the branch, so warp 0 raises the flag and warp 1's spin ends (a correct spin-wait: it
// needs fair scheduling of the two warps, and must not be reported as a deadlock).
extern "C" __global__ void deadlock_spin(int* flag, int* out) {
    unsigned t = threadIdx.x;
#ifdef FIXED
    __syncthreads();
    if (t < 32) {
#else
    if (t < 32) {
        __syncthreads();  // BUG: warp 1 never arrives
#endif
        if (t == 0) atomicExch(flag, 1);
    } else {
        while (atomicAdd(flag, 0) == 0) {
        }
    }
    out[t] = 1;
}
