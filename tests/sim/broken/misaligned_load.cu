// misaligned: a 4-byte float load through a pointer 2 bytes past a float boundary. `in` holds 40
// floats, so every address read is inside it. The twin (-DFIXED) offsets by 4 bytes (one float).
#ifdef FIXED
#define OFFSET 4
#else
#define OFFSET 2  // BUG: ld.global.f32 needs a 4-byte-aligned address
#endif
extern "C" __global__ void misaligned_load(const float* in, float* out) {
    unsigned t = threadIdx.x;
    out[t] = *(const float*)((const char*)(in + t) + OFFSET);
}
