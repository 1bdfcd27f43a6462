// Rotates one token's heads in place: pairs (x[2i], x[2i+1]) of each head's DIM channels at OFFSET turn by
// pos * INV_FREQ[i] and land at [i] and [DIM/2 + i] (HF's layout); INV applies the transpose (the backward).
// cos and sin are scaled by ATTENTION_FACTOR (YaRN's mscale ratio). `buf` holds HEADS * DIM floats.
template <class T, bool INV>
__device__ __forceinline__ void rope_token(T* row, float pos, float* buf) {
  for (int e = threadIdx.x; e < HEADS * DIM; e += blockDim.x)
    buf[e] = row[(e / DIM) * HEAD_STRIDE + OFFSET + e % DIM];
  __syncthreads();
  for (int e = threadIdx.x; e < HEADS * HALF; e += blockDim.x) {
    const int h = e / HALF, i = e % HALF;
    const float theta = pos * INV_FREQ[i];
    const float c = cosf(theta) * ATTENTION_FACTOR, s = sinf(theta) * ATTENTION_FACTOR;
    T* v = row + h * HEAD_STRIDE + OFFSET;
    const float* src = buf + h * DIM;
    if (INV) {
      const float a = src[i], b = src[HALF + i];
      v[2 * i] = a * c + b * s;
      v[2 * i + 1] = b * c - a * s;
    } else {
      const float ev = src[2 * i], od = src[2 * i + 1];
      v[i] = ev * c - od * s;
      v[HALF + i] = od * c + ev * s;
    }
  }
}
