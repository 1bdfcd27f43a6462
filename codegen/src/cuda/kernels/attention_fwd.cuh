// Flash-style forward: a block per (query tile, head, sequence); keys stream through shared memory with an
// online softmax (running max m and sum l per query row), so scores never reach global memory.
// o[b, i, h, :] = sum_j softmax_j(SCALE * q_i . k_j) v_j over visible keys; lse[b, i, h] = m + log(l).
extern "C" __global__ void __launch_bounds__(ATTENTION_FWD_THREADS) attention_fwd(const T0* __restrict__ q,
                                                                   const T1* __restrict__ kvb,
                                                                   const T2* __restrict__ kva,
                                                                   T3* __restrict__ o, T4* __restrict__ lse) {
  extern __shared__ float smem[];
  float* Qs = smem;
  float* Ks = Qs + BQ * QS;
  float* Vs = Ks + BKV * QS;
  float* Ps = Vs + BKV * DV;
  const int r = threadIdx.x >> 2, tq = threadIdx.x & 3;
  const int q0 = blockIdx.x * BQ, h = blockIdx.y, b = blockIdx.z, i = q0 + r;
  load_rows<DQK>(q, b, h, q0, Qs, QS);
  float m = NEG_INF, l = 0.0f, acc[DV4];
#pragma unroll
  for (int jd = 0; jd < DV4; ++jd) acc[jd] = 0.0f;
  const int kend = q0 + BQ < SEQ ? q0 + BQ : SEQ;
  for (int k0 = 0; k0 < kend; k0 += BKV) {
    if (!tile_visible(q0, k0)) continue;
    __syncthreads();
    load_kv(kvb, kva, b, h, k0, Ks, Vs, DV);
    __syncthreads();
    float s[8];
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) s[jj] = 0.0f;
    for (int d = 0; d < DQK; ++d) {
      const float qv = Qs[r * QS + d];
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) s[jj] += qv * Ks[(tq + 4 * jj) * QS + d];
    }
    float mx = NEG_INF;
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) {
      s[jj] = visible(i, k0 + tq + 4 * jj) ? s[jj] * SCALE : NEG_INF;
      mx = fmaxf(mx, s[jj]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float mnew = fmaxf(m, mx);
    const float corr = m == NEG_INF ? 0.0f : expf(m - mnew);
    float ps = 0.0f;
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) {
      const float p = s[jj] == NEG_INF ? 0.0f : expf(s[jj] - mnew);
      Ps[r * PS + tq + 4 * jj] = p;
      ps += p;
    }
    ps += __shfl_xor_sync(0xffffffffu, ps, 1);
    ps += __shfl_xor_sync(0xffffffffu, ps, 2);
    l = l * corr + ps;
    m = mnew;
#pragma unroll
    for (int jd = 0; jd < DV4; ++jd) acc[jd] *= corr;
    __syncwarp();
    for (int c = 0; c < BKV; ++c) {
      const float p = Ps[r * PS + c];
#pragma unroll
      for (int jd = 0; jd < DV4; ++jd) {
        const int d = tq + 4 * jd;
        if (d < DV) acc[jd] += p * Vs[c * DV + d];
      }
    }
  }
  if (i < SEQ) {
    const i64 row = ((i64)b * SEQ + i) * HEADS + h;
#pragma unroll
    for (int jd = 0; jd < DV4; ++jd) {
      const int d = tq + 4 * jd;
      if (d < DV) o[row * DV + d] = acc[jd] / l;
    }
    if (tq == 0) lse[row] = m + logf(l);
  }
}
