// Rotary embedding in place at given positions, one block per token: token t sits at
// positions[t / PER_SEQ] + t % PER_SEQ (a decode step's sequences each resume where their cache ends).
// Pairs (x[2i], x[2i+1]) of each head's DIM channels at OFFSET rotate by pos * INV_FREQ[i] and land at
// [i] and [DIM/2 + i] (HF's layout); cos and sin are scaled by ATTENTION_FACTOR.
extern "C" __global__ void __launch_bounds__(ROPE_AT_THREADS) rope_at(const T0* __restrict__ positions,
                                                                      T1* __restrict__ x) {
  __shared__ float buf[HEADS * DIM];
  const i64 t = blockIdx.x;
  const float pos = (float)(as_index(positions[t / PER_SEQ]) + (i32)(t % PER_SEQ));
  T1* row = x + t * ROW_STRIDE;
  for (int e = threadIdx.x; e < HEADS * DIM; e += blockDim.x)
    buf[e] = row[(e / DIM) * HEAD_STRIDE + OFFSET + e % DIM];
  __syncthreads();
  for (int e = threadIdx.x; e < HEADS * HALF; e += blockDim.x) {
    const int h = e / HALF, i = e % HALF;
    const float theta = pos * INV_FREQ[i];
    const float c = cosf(theta) * ATTENTION_FACTOR, s = sinf(theta) * ATTENTION_FACTOR;
    T1* v = row + h * HEAD_STRIDE + OFFSET;
    const float* src = buf + h * DIM;
    const float ev = src[2 * i], od = src[2 * i + 1];
    v[i] = ev * c - od * s;
    v[HALF + i] = od * c + ev * s;
  }
}
