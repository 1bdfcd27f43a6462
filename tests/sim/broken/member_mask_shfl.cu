// member-mask: a 16-thread block (lanes 16..31 do not exist) calls __shfl_sync with the full mask
// 0xffffffff, naming lanes that can never take part. The twin (-DFIXED) names lanes 0..15.
#ifdef FIXED
#define MASK 0x0000ffffu
#else
#define MASK 0xffffffffu  // BUG: names 16 absent lanes
#endif
extern "C" __global__ void member_mask_shfl(const float* in, float* out) {
    float v = in[threadIdx.x];
    out[threadIdx.x] = __shfl_sync(MASK, v, 0);
}
