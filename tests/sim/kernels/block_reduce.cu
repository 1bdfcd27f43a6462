// A shared-memory tree reduction per block (static shared, __syncthreads between levels), then
// global atomics across blocks: f32 atomicAdd of the block sums, u32 add/or/xor/and, s32 max/min,
// and a ticket counter whose returned old values index `seen` (each ticket must be drawn once).
#define BS 256
extern "C" __global__ void block_reduce(const float* __restrict__ x, const unsigned* __restrict__ u, unsigned n,
                                        float* partial, float* total, unsigned* counters, int* extremes,
                                        unsigned* seen) {
    __shared__ float sdata[BS];
    unsigned tid = threadIdx.x;
    unsigned i = blockIdx.x * BS + tid;
    sdata[tid] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (unsigned s = BS / 2; s > 0; s >>= 1) {
        if (tid < s) sdata[tid] += sdata[tid + s];
        __syncthreads();
    }
    if (tid == 0) {
        partial[blockIdx.x] = sdata[0];
        atomicAdd(total, sdata[0]);
    }
    if (i < n) {
        unsigned ui = u[i];
        atomicAdd(&counters[0], ui);
        atomicAdd(&counters[1], 1u);
        unsigned ticket = atomicAdd(&counters[2], 1u);
        seen[ticket] = 1u;
        atomicOr(&counters[3], 1u << (ui & 31u));
        atomicXor(&counters[4], ui);
        atomicAnd(&counters[5], ui | 0x10000000u);
        atomicMax(&extremes[0], (int)ui);
        atomicMin(&extremes[1], (int)ui);
    }
}
