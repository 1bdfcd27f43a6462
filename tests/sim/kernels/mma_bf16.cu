// D = A * B + C with mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, fragments loaded from
// global memory by hand. A: M x K row-major bf16 bits, B: K x N row-major bf16 bits, C and D: M x N
// row-major f32; M % 16 == 0, N % 8 == 0, K % 16 == 0. Warp w (counting over the whole grid)
// computes output tile (w / (N/8), w % (N/8)), looping over K in steps of 16.
//
// Fragment layouts, from the PTX ISA, section 9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with
// floating point type" (PTX ISA 8.x; Figures 79, 81, 83):
//   groupID = %laneid >> 2, threadID_in_group = %laneid % 4
//   A (.bf16, four .f16x2 registers holding a0..a7, "Elements (low to high)"):
//     row = groupID       for ai where 0 <= i < 2 || 4 <= i < 6,   groupID + 8 otherwise
//     col = threadID_in_group * 2 + (i & 0x1)        for ai where i < 4
//           threadID_in_group * 2 + (i & 0x1) + 8    for ai where i >= 4
//   B (.bf16, two .f16x2 registers holding b0..b3):
//     row = threadID_in_group * 2 + (i & 0x1)        for bi where i < 2
//           threadID_in_group * 2 + (i & 0x1) + 8    for bi where i >= 2
//     col = groupID
//   C/D (.f32, four registers c0..c3):
//     row = groupID for ci where i < 2, groupID + 8 for ci where i >= 2
//     col = threadID_in_group * 2 + (i & 0x1)
// "Elements (low to high)": in a packed register the element with the lower index is in the low
// 16 bits, so register j of A holds a(2j) in bits 0..15 and a(2j+1) in bits 16..31.
static __device__ __forceinline__ unsigned pack2(unsigned short lo, unsigned short hi) {
    return (unsigned)lo | ((unsigned)hi << 16);
}

extern "C" __global__ void mma_bf16_gemm(const unsigned short* __restrict__ A, const unsigned short* __restrict__ B,
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
    for (int k0 = 0; k0 < K; k0 += 16) {
        int ka = k0 + t * 2;
        unsigned a0 = pack2(A[r0 * K + ka], A[r0 * K + ka + 1]);          // a0, a1: row g,   cols 2t, 2t+1
        unsigned a1 = pack2(A[r1 * K + ka], A[r1 * K + ka + 1]);          // a2, a3: row g+8, cols 2t, 2t+1
        unsigned a2 = pack2(A[r0 * K + ka + 8], A[r0 * K + ka + 9]);      // a4, a5: row g,   cols 2t+8, 2t+9
        unsigned a3 = pack2(A[r1 * K + ka + 8], A[r1 * K + ka + 9]);      // a6, a7: row g+8, cols 2t+8, 2t+9
        unsigned b0 = pack2(B[ka * N + bc], B[(ka + 1) * N + bc]);        // b0, b1: rows 2t, 2t+1, col g
        unsigned b1 = pack2(B[(ka + 8) * N + bc], B[(ka + 9) * N + bc]);  // b2, b3: rows 2t+8, 2t+9, col g
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
    D[r0 * N + c0] = d0;
    D[r0 * N + c0 + 1] = d1;
    D[r1 * N + c0] = d2;
    D[r1 * N + c0 + 1] = d3;
}
