// MLA decode attention in the absorbed form, FlashMLA's problem shape: many heads, few query tokens, one
// long latent shared by every head. A block per (group of HG heads, new token): the group's absorbed
// queries [q_lat ; q_pe] sit in shared memory, the sequence's cache rows stream through it BK at a time
// (loaded once for all HG heads), with an online softmax (running max m and sum l per head), so scores
// never reach global memory. Query t of sequence b at p = positions[b] + t % PER_SEQ sees rows j <= p
// (and the window). o_lat[t, h, :] = sum_j softmax_j(SCALE * (q_lat . c_j + q_pe . k_pe_j)) c_j.
template <bool FP8, class TL, class TR, class TO>
__device__ __forceinline__ void latent_attention_body(const T0* __restrict__ positions, const T1* __restrict__ q_lat,
                                                      const T2* __restrict__ q, const TL* __restrict__ latent,
                                                      const float* __restrict__ scales, const TR* __restrict__ rope,
                                                      TO* __restrict__ o) {
  constexpr int W = KVR + ROPE;
  __shared__ float Qs[HG * KS];
  __shared__ float Kv[BK * KS];
  __shared__ float P[HG * BK];
  __shared__ float m[HG], l[HG], alpha[HG];
  const int g = blockIdx.x;
  const i64 t = blockIdx.y;
  const i64 b = t / PER_SEQ;
  i64 p = (i64)as_index(positions[b]) + t % PER_SEQ;
  if (p > LEN - 1) p = LEN - 1;
  for (int e = threadIdx.x; e < HG * W; e += blockDim.x) {
    const int h = e / W, c = e % W;
    const i64 head = (i64)g * HG + h;
    Qs[h * KS + c] = c < KVR ? (float)q_lat[(t * HEADS + head) * KVR + c] : (float)q[(t * HEADS + head) * DQK + NOPE + c - KVR];
  }
  if (threadIdx.x < HG) {
    m[threadIdx.x] = NEG_INF;
    l[threadIdx.x] = 0.0f;
  }
  float acc[PER];
#pragma unroll
  for (int i = 0; i < PER; ++i) acc[i] = 0.0f;
  for (i64 k0 = 0; k0 <= p; k0 += BK) {
    // A tile wholly outside the window (and past the sinks) is skipped by the whole block.
    if (WINDOW > 0 && k0 + BK - 1 <= p - WINDOW && k0 >= SINKS) continue;
    __syncthreads();
    for (int e = threadIdx.x; e < BK * W; e += blockDim.x) {
      const int j = e / W, c = e % W;
      const i64 row = b * LEN + k0 + j;
      float v = 0.0f;
      if (k0 + j <= p) {
        if (c < KVR) {
          if constexpr (FP8)
            v = from_e4m3(latent[row * KVR + c].bits) * scales[row * GROUPS + c / TILE];
          else
            v = (float)latent[row * KVR + c];
        } else {
          v = (float)rope[row * ROPE + c - KVR];
        }
      }
      Kv[j * KS + c] = v;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < HG * BK; e += blockDim.x) {
      const int h = e / BK, j = e % BK;
      const i64 key = k0 + j;
      const bool seen = key <= p && (WINDOW == 0 || p - key < WINDOW || key < SINKS);
      float s = NEG_INF;
      if (seen) {
        float dot = 0.0f;
        for (int c = 0; c < W; ++c) dot += Qs[h * KS + c] * Kv[j * KS + c];
        s = SCALE * dot;
      }
      P[h * BK + j] = s;
    }
    __syncthreads();
    if (threadIdx.x < HG) {
      const int h = threadIdx.x;
      float mx = NEG_INF;
      for (int j = 0; j < BK; ++j) mx = fmaxf(mx, P[h * BK + j]);
      const float mnew = fmaxf(m[h], mx);
      const float corr = m[h] == NEG_INF ? 0.0f : expf(m[h] - mnew);
      float sum = 0.0f;
      for (int j = 0; j < BK; ++j) {
        const float s = P[h * BK + j];
        const float e = s == NEG_INF ? 0.0f : expf(s - mnew);
        P[h * BK + j] = e;
        sum += e;
      }
      l[h] = l[h] * corr + sum;
      m[h] = mnew;
      alpha[h] = corr;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const int e = threadIdx.x + i * LATENT_ATTENTION_THREADS;
      if (e < HG * KVR) {
        const int h = e / KVR, c = e % KVR;
        float a = acc[i] * alpha[h];
        for (int j = 0; j < BK; ++j) a += P[h * BK + j] * Kv[j * KS + c];
        acc[i] = a;
      }
    }
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int e = threadIdx.x + i * LATENT_ATTENTION_THREADS;
    if (e < HG * KVR) {
      const int h = e / KVR, c = e % KVR;
      o[(t * HEADS + (i64)g * HG + h) * KVR + c] = l[h] > 0.0f ? acc[i] / l[h] : 0.0f;
    }
  }
}
