// MLA attention tiles: BQ queries x BKV keys per step, THREADS threads (the emitter's constants); a thread
// owns one row of a tile and every 4th column of it. Shared rows are padded by one float so strided row
// reads hit distinct banks.
static_assert(THREADS == 4 * BQ && BQ == BKV, "a thread per (row, column residue mod 4) of a square tile");
constexpr int QS = DQK + 1, VS = DV + 1, PS = BKV + 1;
constexpr int DQ4 = (DQK + 3) / 4, DV4 = (DV + 3) / 4, NP4 = (NOPE + 3) / 4, RP4 = (ROPE + 3) / 4;

// Is key j visible from query i? Causal, and within WINDOW (0: unlimited) or one of the first SINKS keys.
__device__ __forceinline__ bool visible(int i, int j) {
  return j <= i && i < SEQ && j < SEQ && (WINDOW == 0 || i - j < WINDOW || j < SINKS);
}

// Can any key of [k0, k0 + BKV) be visible from a query of [q0, q0 + BQ)?
__device__ __forceinline__ bool tile_visible(int q0, int k0) {
  return k0 <= q0 + BQ - 1 && (WINDOW == 0 || k0 < SINKS || q0 - (k0 + BKV - 1) < WINDOW);
}

// Key j of head h, dimension d < DQK: k_nope from kvb, then the decoupled rope key (shared by all heads) from kva.
template <typename TB, typename TA>
__device__ __forceinline__ float key(const TB* __restrict__ kvb, const TA* __restrict__ kva, int b, int j, int h, int d) {
  const i64 row = (i64)b * SEQ + j;
  return d < NOPE ? (float)kvb[(row * HEADS + h) * (NOPE + DV) + d] : (float)kva[row * KPE_STRIDE + KPE_OFFSET + (d - NOPE)];
}

template <typename TB>
__device__ __forceinline__ float value(const TB* __restrict__ kvb, int b, int j, int h, int d) {
  return kvb[(((i64)b * SEQ + j) * HEADS + h) * (NOPE + DV) + NOPE + d];
}

// Stages keys [k0, k0 + BKV) of head h into Ks[BKV][QS] and values into Vs[BKV][vs] (zeros past SEQ).
template <typename TB, typename TA>
__device__ __forceinline__ void load_kv(const TB* __restrict__ kvb, const TA* __restrict__ kva, int b, int h, int k0,
                                        float* Ks, float* Vs, int vs) {
  for (int e = threadIdx.x; e < BKV * DQK; e += THREADS) {
    const int c = e / DQK, d = e % DQK, j = k0 + c;
    Ks[c * QS + d] = j < SEQ ? key(kvb, kva, b, j, h, d) : 0.0f;
  }
  for (int e = threadIdx.x; e < BKV * DV; e += THREADS) {
    const int c = e / DV, d = e % DV, j = k0 + c;
    Vs[c * vs + d] = j < SEQ ? value(kvb, b, j, h, d) : 0.0f;
  }
}

// Stages rows [q0, q0 + BQ) of a [BATCH, SEQ, HEADS, W] tensor's head h into S[BQ][stride].
template <int W, typename TX>
__device__ __forceinline__ void load_rows(const TX* __restrict__ x, int b, int h, int q0, float* S, int stride) {
  for (int e = threadIdx.x; e < BQ * W; e += THREADS) {
    const int r = e / W, d = e % W, i = q0 + r;
    S[r * stride + d] = i < SEQ ? (float)x[(((i64)b * SEQ + i) * HEADS + h) * W + d] : 0.0f;
  }
}
