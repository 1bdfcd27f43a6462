// Every thread of a 3-D grid of 3-D blocks writes its special registers, its %laneid, and what
// warp-level operations see in a block of 48 threads (one full warp and one warp of 16).
extern "C" __global__ void thread_ids(unsigned* out) {
    unsigned tpb = blockDim.x * blockDim.y * blockDim.z;
    unsigned tlin = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned blin = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    unsigned* o = out + (blin * tpb + tlin) * 16;
    o[0] = threadIdx.x;
    o[1] = threadIdx.y;
    o[2] = threadIdx.z;
    o[3] = blockIdx.x;
    o[4] = blockIdx.y;
    o[5] = blockIdx.z;
    o[6] = blockDim.x;
    o[7] = blockDim.y;
    o[8] = blockDim.z;
    o[9] = gridDim.x;
    o[10] = gridDim.y;
    o[11] = gridDim.z;
    unsigned lane;
    asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
    o[12] = lane;
    unsigned base = tlin & ~31u;
    unsigned active = tpb - base < 32u ? tpb - base : 32u;
    unsigned mask = active == 32u ? 0xffffffffu : (1u << active) - 1u;
    o[13] = __shfl_sync(mask, tlin, 0);
    o[14] = __popc(__ballot_sync(mask, 1));
    o[15] = __activemask();
}
