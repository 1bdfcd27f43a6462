// The key up-projection folded into the query: q_lat[t, h, c] = sum_d q[t, h, d] W_UK_h[d, c], d < NOPE,
// with W_UK_h rows h * HS .. + NOPE of kv_b_proj [HEADS * HS, KVR]. A block per (head, TT tokens); the
// tokens' q_nope sit in shared memory and each thread walks its columns c down W_UK_h (coalesced rows).
extern "C" __global__ void __launch_bounds__(ABSORB_QUERY_THREADS) absorb_query(const T0* __restrict__ q,
                                                                                const T1* __restrict__ kv_b,
                                                                                T2* __restrict__ q_lat) {
  __shared__ float qs[TT * NOPE];
  const i64 h = blockIdx.x, t0 = (i64)blockIdx.y * TT;
  for (int e = threadIdx.x; e < TT * NOPE; e += blockDim.x) {
    const i64 t = t0 + e / NOPE;
    qs[e] = t < TOKENS ? (float)q[(t * HEADS + h) * DQK + e % NOPE] : 0.0f;
  }
  __syncthreads();
  for (int c = threadIdx.x; c < KVR; c += blockDim.x) {
    float acc[TT];
#pragma unroll
    for (int i = 0; i < TT; ++i) acc[i] = 0.0f;
    for (int d = 0; d < NOPE; ++d) {
      const float w = (float)kv_b[(h * HS + d) * KVR + c];
#pragma unroll
      for (int i = 0; i < TT; ++i) acc[i] += qs[i * NOPE + d] * w;
    }
#pragma unroll
    for (int i = 0; i < TT; ++i)
      if (t0 + i < TOKENS) q_lat[((t0 + i) * HEADS + h) * KVR + c] = acc[i];
  }
}
