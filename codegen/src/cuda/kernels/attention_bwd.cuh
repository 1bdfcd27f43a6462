// Flash-style backward in two deterministic launches (no atomics), recomputing p_ij = exp(SCALE q_i.k_j - lse_i):
//   dq:  a block per (query tile, head, sequence); dq_i += SCALE sum_j dS_ij k_j.
//   dkv: a block per (key tile, sequence) that walks every head, so the rope key shared by the heads sums
//        its gradient in registers; dk_j += SCALE sum_i dS_ij q_i, dv_j += sum_i p_ij do_i.
// dS_ij = p_ij (do_i . v_j - D_i), D_i = do_i . o_i (recomputed per tile: no scratch buffer).
extern "C" __global__ void __launch_bounds__(ATTENTION_BWD_DQ_THREADS) attention_bwd_dq(
    const T0* __restrict__ q, const T1* __restrict__ kvb, const T2* __restrict__ kva,
    const T3* __restrict__ o, const T4* __restrict__ lse, const T5* __restrict__ dout, T6* __restrict__ dq,
    T7* __restrict__ dkvb, T8* __restrict__ dkva) {
  extern __shared__ float smem[];
  float* Qs = smem;
  float* dOs = Qs + BQ * QS;
  float* Ks = dOs + BQ * VS;
  float* Vs = Ks + BKV * QS;
  float* dSs = Vs + BKV * VS;
  const int r = threadIdx.x >> 2, tq = threadIdx.x & 3;
  const int q0 = blockIdx.x * BQ, h = blockIdx.y, b = blockIdx.z, i = q0 + r;
  const i64 row = ((i64)b * SEQ + (i < SEQ ? i : 0)) * HEADS + h;
  load_rows<DQK>(q, b, h, q0, Qs, QS);
  load_rows<DV>(dout, b, h, q0, dOs, VS);
  __syncthreads();
  float dd = 0.0f;
  if (i < SEQ)
    for (int d = tq; d < DV; d += 4) dd += dOs[r * VS + d] * o[row * DV + d];
  dd += __shfl_xor_sync(0xffffffffu, dd, 1);
  dd += __shfl_xor_sync(0xffffffffu, dd, 2);
  const float L = i < SEQ ? lse[row] : 0.0f;
  float acc[DQ4];
#pragma unroll
  for (int jd = 0; jd < DQ4; ++jd) acc[jd] = 0.0f;
  const int kend = q0 + BQ < SEQ ? q0 + BQ : SEQ;
  for (int k0 = 0; k0 < kend; k0 += BKV) {
    if (!tile_visible(q0, k0)) continue;
    __syncthreads();
    load_kv(kvb, kva, b, h, k0, Ks, Vs, VS);
    __syncthreads();
    float s[8], dp[8];
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) s[jj] = dp[jj] = 0.0f;
    for (int d = 0; d < DQK; ++d) {
      const float qv = Qs[r * QS + d];
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) s[jj] += qv * Ks[(tq + 4 * jj) * QS + d];
    }
    for (int d = 0; d < DV; ++d) {
      const float g = dOs[r * VS + d];
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) dp[jj] += g * Vs[(tq + 4 * jj) * VS + d];
    }
#pragma unroll
    for (int jj = 0; jj < 8; ++jj) {
      const float p = visible(i, k0 + tq + 4 * jj) ? expf(s[jj] * SCALE - L) : 0.0f;
      dSs[r * PS + tq + 4 * jj] = p * (dp[jj] - dd) * SCALE;
    }
    __syncwarp();
    for (int c = 0; c < BKV; ++c) {
      const float g = dSs[r * PS + c];
#pragma unroll
      for (int jd = 0; jd < DQ4; ++jd) {
        const int d = tq + 4 * jd;
        if (d < DQK) acc[jd] += g * Ks[c * QS + d];
      }
    }
  }
  if (i < SEQ) {
#pragma unroll
    for (int jd = 0; jd < DQ4; ++jd) {
      const int d = tq + 4 * jd;
      if (d < DQK) dq[row * DQK + d] += acc[jd];
    }
  }
}

extern "C" __global__ void __launch_bounds__(ATTENTION_BWD_DKV_THREADS) attention_bwd_dkv(
    const T0* __restrict__ q, const T1* __restrict__ kvb, const T2* __restrict__ kva,
    const T3* __restrict__ o, const T4* __restrict__ lse, const T5* __restrict__ dout, T6* __restrict__ dq,
    T7* __restrict__ dkvb, T8* __restrict__ dkva) {
  extern __shared__ float smem[];
  float* Ks = smem;
  float* Vs = Ks + BKV * QS;
  float* Qs = Vs + BKV * VS;
  float* dOs = Qs + BQ * QS;
  float* Ps = dOs + BQ * VS;
  float* dSs = Ps + BKV * PS;
  float* Ls = dSs + BKV * PS;
  float* Ds = Ls + BQ;
  const int c = threadIdx.x >> 2, tq = threadIdx.x & 3;
  const int k0 = blockIdx.x * BKV, b = blockIdx.y, j = k0 + c;
  float dkpe[RP4];
#pragma unroll
  for (int jd = 0; jd < RP4; ++jd) dkpe[jd] = 0.0f;
  for (int h = 0; h < HEADS; ++h) {
    __syncthreads();
    load_kv(kvb, kva, b, h, k0, Ks, Vs, VS);
    float dk[NP4], dv[DV4];
#pragma unroll
    for (int jd = 0; jd < NP4; ++jd) dk[jd] = 0.0f;
#pragma unroll
    for (int jd = 0; jd < DV4; ++jd) dv[jd] = 0.0f;
    for (int q0 = (k0 / BQ) * BQ; q0 < SEQ; q0 += BQ) {
      if (!tile_visible(q0, k0)) continue;
      __syncthreads();
      load_rows<DQK>(q, b, h, q0, Qs, QS);
      load_rows<DV>(dout, b, h, q0, dOs, VS);
      {
        // D_i and lse_i of this query tile: 4 threads per row.
        const int rr = threadIdx.x >> 2, i = q0 + rr;
        const i64 row = ((i64)b * SEQ + (i < SEQ ? i : 0)) * HEADS + h;
        float dd = 0.0f;
        if (i < SEQ)
          for (int d = tq; d < DV; d += 4) dd += dout[row * DV + d] * o[row * DV + d];
        dd += __shfl_xor_sync(0xffffffffu, dd, 1);
        dd += __shfl_xor_sync(0xffffffffu, dd, 2);
        if (tq == 0) {
          Ds[rr] = dd;
          Ls[rr] = i < SEQ ? lse[row] : 0.0f;
        }
      }
      __syncthreads();
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) {
        const int rr = tq + 4 * jj;
        float s = 0.0f, dp = 0.0f;
        for (int d = 0; d < DQK; ++d) s += Qs[rr * QS + d] * Ks[c * QS + d];
        for (int d = 0; d < DV; ++d) dp += dOs[rr * VS + d] * Vs[c * VS + d];
        const float p = visible(q0 + rr, j) ? expf(s * SCALE - Ls[rr]) : 0.0f;
        Ps[c * PS + rr] = p;
        dSs[c * PS + rr] = p * (dp - Ds[rr]) * SCALE;
      }
      __syncwarp();
      for (int rr = 0; rr < BQ; ++rr) {
        const float p = Ps[c * PS + rr], g = dSs[c * PS + rr];
#pragma unroll
        for (int jd = 0; jd < DV4; ++jd) {
          const int d = tq + 4 * jd;
          if (d < DV) dv[jd] += p * dOs[rr * VS + d];
        }
#pragma unroll
        for (int jd = 0; jd < NP4; ++jd) {
          const int d = tq + 4 * jd;
          if (d < NOPE) dk[jd] += g * Qs[rr * QS + d];
        }
#pragma unroll
        for (int jd = 0; jd < RP4; ++jd) {
          const int d = tq + 4 * jd;
          if (d < ROPE) dkpe[jd] += g * Qs[rr * QS + NOPE + d];
        }
      }
    }
    if (j < SEQ) {
      const i64 row = ((i64)b * SEQ + j) * HEADS + h;
#pragma unroll
      for (int jd = 0; jd < NP4; ++jd) {
        const int d = tq + 4 * jd;
        if (d < NOPE) dkvb[row * (NOPE + DV) + d] += dk[jd];
      }
#pragma unroll
      for (int jd = 0; jd < DV4; ++jd) {
        const int d = tq + 4 * jd;
        if (d < DV) dkvb[row * (NOPE + DV) + NOPE + d] += dv[jd];
      }
    }
  }
  if (j < SEQ) {
#pragma unroll
    for (int jd = 0; jd < RP4; ++jd) {
      const int d = tq + 4 * jd;
      if (d < ROPE) dkva[((i64)b * SEQ + j) * KPE_STRIDE + KPE_OFFSET + d] += dkpe[jd];
    }
  }
}
