// E4M3 quantization of MATS dense ROWS x COLS matrices, one block per 128 x 128 region (grid: column
// regions, row regions, matrices): each group's scale is max(amax, 1e-4) / 448 and its values x / scale
// rounded to nearest-even and saturated. SCALING 0: 1 x 128 row tiles, scales [ROWS, CT]; 1: 128 x 1
// column tiles, [RT, COLS]; 2: 128 x 128 blocks, [RT, CT] (each matrix's after the previous one's).
static_assert(QUANTIZE_THREADS == 256, "two threads per column of a 128-wide region, eight warps per row tile");
constexpr int CT = (COLS + 127) / 128, RT = (ROWS + 127) / 128;
constexpr i64 PER_MAT = SCALING == 0 ? (i64)ROWS * CT : (SCALING == 1 ? (i64)RT * COLS : (i64)RT * CT);

extern "C" __global__ void __launch_bounds__(QUANTIZE_THREADS) quantize(const T0* __restrict__ x, T1* __restrict__ q,
                                                          T2* __restrict__ scales) {
  __shared__ float red[256];
  const int c0 = blockIdx.x * 128, r0 = blockIdx.y * 128, tid = threadIdx.x;
  const T0* X = x + (i64)blockIdx.z * ROWS * COLS;
  T1* Q = q + (i64)blockIdx.z * ROWS * COLS;
  T2* S = scales + (i64)blockIdx.z * PER_MAT;
  if (SCALING == 0) {
    // A warp per row: four columns a lane, the tile's amax by shuffles.
    const int warp = tid >> 5, lane = tid & 31;
    for (int i = warp; i < 128 && r0 + i < ROWS; i += 8) {
      const i64 row = (i64)(r0 + i) * COLS;
      float v[4], amax = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = c0 + lane * 4 + j;
        v[j] = c < COLS ? (float)X[row + c] : 0.0f;
        amax = fmaxf(amax, fabsf(v[j]));
      }
      const float s = fp8_scale(warp_max(amax));
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = c0 + lane * 4 + j;
        if (c < COLS) Q[row + c].bits = to_e4m3(v[j] / s);
      }
      if (lane == 0) S[(i64)(r0 + i) * CT + blockIdx.x] = s;
    }
  } else {
    // A thread per column and half of the rows; the halves' amaxes meet in shared memory.
    const int c = c0 + (tid & 127), h0 = r0 + (tid >> 7) * 64;
    const int h1 = h0 + 64 < ROWS ? h0 + 64 : ROWS;
    float amax = 0.0f;
    if (c < COLS)
      for (int r = h0; r < h1; ++r) amax = fmaxf(amax, fabsf((float)X[(i64)r * COLS + c]));
    red[tid] = amax;
    __syncthreads();
    if (SCALING == 1) {
      amax = fmaxf(red[tid & 127], red[(tid & 127) + 128]);
    } else {
      // One scale for the block: every thread reduces the same values in the same order.
      amax = 0.0f;
      for (int i = 0; i < 256; ++i) amax = fmaxf(amax, red[i]);
    }
    const float s = fp8_scale(amax);
    if (c < COLS)
      for (int r = h0; r < h1; ++r) Q[(i64)r * COLS + c].bits = to_e4m3((float)X[(i64)r * COLS + c] / s);
    if (SCALING == 1 && tid < 128 && c < COLS) S[(i64)blockIdx.y * COLS + c] = s;
    if (SCALING == 2 && tid == 0) S[(i64)blockIdx.y * CT + blockIdx.x] = s;
  }
}
