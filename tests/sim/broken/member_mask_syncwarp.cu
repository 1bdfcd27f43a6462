// member-mask: one full warp; lanes 0..15 call __syncwarp() (mask 0xffffffff, naming every lane)
// and lanes 16..31 skip it and exit, so the lanes the mask names never all arrive (PTX ISA
// "bar.warp.sync": a thread waits until all threads of membermask have executed a bar.warp.sync
// with the same mask). Two correct twins:
//   -DFIXED        the mask names only the lanes that call it (0x0000ffff);
//   -DFIXED_SPLIT  every lane calls __syncwarp(0xffffffff), the two halves from two different
//                  sites, which is legal on sm_70 and later (only "for .target sm_6x or below" must
//                  all threads execute the same bar.warp.sync instruction), and orders the halves'
//                  shared writes before the reads of the other half's slots.
#ifdef FIXED
#define MASK 0x0000ffffu
#else
#define MASK 0xffffffffu  // BUG (unless FIXED): names lanes 16..31, which skip the call
#endif
extern "C" __global__ void member_mask_syncwarp(int* out) {
    __shared__ int s[32];
    unsigned t = threadIdx.x;
    s[t] = 2 * t;
#ifdef FIXED_SPLIT
    if (t < 16) {
        __syncwarp(0xffffffffu);
        out[t] = s[t ^ 16];
    } else {
        __syncwarp(0xffffffffu);
        out[t] = s[t ^ 16] + 100;
    }
#else
    if (t < 16) {
        __syncwarp(MASK);
        out[t] = s[t ^ 1];
    } else {
        out[t] = -1;
    }
#endif
}
