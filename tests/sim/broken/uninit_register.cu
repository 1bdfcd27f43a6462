// uninitialized: inline PTX declares a register and adds to it before anything set it. The twin
// (-DFIXED) sets it first.
extern "C" __global__ void uninit_register(unsigned* out) {
    unsigned x;
#ifdef FIXED
    asm volatile("{ .reg .b32 r; mov.u32 r, 5; add.u32 %0, r, 1; }" : "=r"(x));
#else
    asm volatile("{ .reg .b32 r; add.u32 %0, r, 1; }" : "=r"(x));  // BUG: r is read unset
#endif
    out[threadIdx.x] = x;
}
