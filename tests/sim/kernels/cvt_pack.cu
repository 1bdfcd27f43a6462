// Packed conversions through inline PTX (PTX ISA, "cvt" instruction):
//   cvt.rn.bf16x2.f32 d, a, b            -> d[31:16] = bf16(a), d[15:0] = bf16(b)
//   cvt.rn.satfinite.e4m3x2.f32 d, a, b  -> d[15:8] = e4m3(a), d[7:0] = e4m3(b)   (d is .b16)
//   cvt.rn.f16x2.e4m3x2 d, a             -> d[31:16] = f16(a[15:8]), d[15:0] = f16(a[7:0])
extern "C" __global__ void cvt_pack(const float* __restrict__ a, const float* __restrict__ b, unsigned n,
                                    unsigned* bf16x2, unsigned short* e4m3x2, unsigned* f16x2) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float ai = a[i], bi = b[i];
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(ai), "f"(bi));
    bf16x2[i] = r;
    unsigned short q;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(q) : "f"(ai), "f"(bi));
    e4m3x2[i] = q;
    unsigned h;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h) : "h"(q));
    f16x2[i] = h;
}
