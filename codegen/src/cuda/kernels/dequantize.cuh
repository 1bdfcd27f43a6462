// x = q * scale over a dense ROWS x COLS E4M3 matrix, one f32 scale per group — SCALING 0: 1 x 128 row
// tiles, scales [ROWS, CT]; 1: 128 x 1 column tiles, [RT, COLS]; 2: 128 x 128 blocks, [RT, CT] — stored in
// x's dtype. The backward's copy of an activation the forward kept in FP8.
constexpr i64 CT = (COLS + 127) / 128;
extern "C" __global__ void __launch_bounds__(DEQUANTIZE_THREADS) dequantize(const T0* __restrict__ q,
                                                                           const T1* __restrict__ scales,
                                                                           T2* __restrict__ x) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)ROWS * COLS; i += (i64)gridDim.x * blockDim.x) {
    const i64 r = i / COLS, c = i % COLS;
    const i64 g = SCALING == 0 ? r * CT + c / 128 : (SCALING == 1 ? (r / 128) * COLS + c : (r / 128) * CT + c / 128);
    x[i] = from_e4m3(q[i].bits) * (float)scales[g];
  }
}
