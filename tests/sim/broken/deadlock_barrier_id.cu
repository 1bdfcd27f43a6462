// deadlock: 64 threads. Warp 0 waits at __syncthreads() (barrier 0, all 64 threads expected),
// warp 1 at barrier 1 (all 64 expected): neither barrier can ever fill. The twin (-DFIXED) has both
// warps wait at barrier 1 from two different sites, which is legal for the non-.aligned
// `barrier.sync` (PTX ISA, "barrier"): the barrier counts arrivals, not instruction addresses.
extern "C" __global__ void deadlock_barrier_id(int* out) {
    unsigned t = threadIdx.x;
    if (t < 32) {
        out[t] = 1;
#ifdef FIXED
        asm volatile("barrier.sync 1;" ::: "memory");
#else
        __syncthreads();  // BUG: barrier 0, while warp 1 waits at barrier 1
#endif
    } else {
        out[t] = 2;
        asm volatile("barrier.sync 1;" ::: "memory");
    }
    out[t] += 10;
}
