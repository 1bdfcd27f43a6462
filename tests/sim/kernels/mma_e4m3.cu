// D = A * B + C with mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32, fragments loaded from
// global memory by hand. A: M x K row-major e4m3 bytes, B: K x N row-major e4m3 bytes, C and D:
// M x N row-major f32; M % 16 == 0, N % 8 == 0, K % 32 == 0. Warp w (over the whole grid) computes
// output tile (w / (N/8), w % (N/8)), looping over K in steps of 32.
//
// Fragment layouts, from the PTX ISA, section 9.7.14.5.10 "Matrix Fragments for mma.m16n8k32"
// (the .s8/.u8/.e4m3/.e5m2 rows; Figures 88, 90, 91, 92):
//   groupID = %laneid >> 2, threadID_in_group = %laneid % 4
//   A (.e4m3, four .b32 registers, each with four elements; a0..a15 low to high):
//     row = groupID       for ai where 0 <= i < 4 || 8 <= i < 12,  groupID + 8 otherwise
//     col = threadID_in_group * 4 + (i & 0x3)        for ai where i < 8
//           threadID_in_group * 4 + (i & 0x3) + 16   for ai where i >= 8
//   B (.e4m3, two .b32 registers; b0..b7 low to high):
//     row = threadID_in_group * 4 + (i & 0x3)        for bi where i < 4
//           threadID_in_group * 4 + (i & 0x3) + 16   for bi where i >= 4
//     col = groupID
//   C/D (.f32): row = groupID for ci where i < 2, groupID + 8 otherwise;
//               col = threadID_in_group * 2 + (i & 0x1)
// So register j of A holds a(4j) in bits 0..7 up to a(4j+3) in bits 24..31.
static __device__ __forceinline__ unsigned pack4(unsigned char b0, unsigned char b1, unsigned char b2,
                                                 unsigned char b3) {
    return (unsigned)b0 | ((unsigned)b1 << 8) | ((unsigned)b2 << 16) | ((unsigned)b3 << 24);
}

extern "C" __global__ void mma_e4m3_gemm(const unsigned char* __restrict__ A, const unsigned char* __restrict__ B,
                                         const float* __restrict__ C, float* __restrict__ D, int M, int N, int K) {
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    int tiles_n = N / 8;
    int tm = warp / tiles_n, tn = warp % tiles_n;
    if (tm * 16 >= M) return;  // uniform across the warp
    int g = lane >> 2, t = lane & 3;
    int r0 = tm * 16 + g, r1 = r0 + 8;
    int c0 = tn * 8 + t * 2;
    int bc = tn * 8 + g;
    float d0 = C[r0 * N + c0], d1 = C[r0 * N + c0 + 1], d2 = C[r1 * N + c0], d3 = C[r1 * N + c0 + 1];
    for (int k0 = 0; k0 < K; k0 += 32) {
        const unsigned char* p0 = A + r0 * K + k0 + t * 4;
        const unsigned char* p1 = A + r1 * K + k0 + t * 4;
        unsigned a0 = pack4(p0[0], p0[1], p0[2], p0[3]);      // a0..a3:   row g,   cols 4t..4t+3
        unsigned a1 = pack4(p1[0], p1[1], p1[2], p1[3]);      // a4..a7:   row g+8, cols 4t..4t+3
        unsigned a2 = pack4(p0[16], p0[17], p0[18], p0[19]);  // a8..a11:  row g,   cols 4t+16..4t+19
        unsigned a3 = pack4(p1[16], p1[17], p1[18], p1[19]);  // a12..a15: row g+8, cols 4t+16..4t+19
        const unsigned char* q = B + (k0 + t * 4) * N + bc;
        unsigned b0 = pack4(q[0], q[N], q[2 * N], q[3 * N]);                  // b0..b3: rows 4t..4t+3, col g
        unsigned b1 = pack4(q[16 * N], q[17 * N], q[18 * N], q[19 * N]);      // b4..b7: rows 4t+16..4t+19
        asm volatile(
            "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
    D[r0 * N + c0] = d0;
    D[r0 * N + c0 + 1] = d1;
    D[r1 * N + c0] = d2;
    D[r1 * N + c0 + 1] = d3;
}
