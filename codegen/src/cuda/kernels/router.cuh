// DeepSeek router, one warp per token (8 per block). scores = sigmoid(logits) or softmax(logits);
// sel = scores + bias (the bias steers selection only; NaN ranks lowest, as -inf); with GROUPS > 1 each
// group is ranked by the sum of its two best sel, the best TOP_GROUPS groups kept; then the TOP_K best sel
// (ties to the lower index; -inf is a candidate, so every slot gets a distinct expert whatever the scores).
// weights = scores of the chosen, normalized to sum 1 when NORMALIZE, times ROUTE_SCALE. Ranked keys are
// never NaN, so NaN in sel marks an expert unavailable (its group dropped, or already chosen).
__device__ __forceinline__ float rank_key(float v) { return isnan(v) ? NEG_INF : v; }
#define UNAVAILABLE (__int_as_float(0x7fc00000))

extern "C" __global__ void __launch_bounds__(ROUTER_THREADS) router(const T0* __restrict__ logits,
                                                        const T1* __restrict__ bias,
                                                        T2* __restrict__ scores, T3* __restrict__ idx,
                                                        T4* __restrict__ weights) {
  __shared__ float sel_s[8][EXPERTS];
  __shared__ float sc_s[8][EXPERTS];
  __shared__ int chosen_s[8][TOP_K];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const i64 t = (i64)blockIdx.x * 8 + warp;
  if (t >= TOKENS) return;
  float* sel = sel_s[warp];
  float* sc = sc_s[warp];
  const float* lg = logits + t * EXPERTS;
  if (SIGMOID) {
    for (int e = lane; e < EXPERTS; e += 32) sc[e] = 1.0f / (1.0f + expf(-lg[e]));
  } else {
    float mx = NEG_INF;
    for (int e = lane; e < EXPERTS; e += 32) mx = fmaxf(mx, lg[e]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int e = lane; e < EXPERTS; e += 32) {
      sc[e] = expf(lg[e] - mx);
      sum += sc[e];
    }
    sum = warp_sum(sum);
    for (int e = lane; e < EXPERTS; e += 32) sc[e] /= sum;
  }
  for (int e = lane; e < EXPERTS; e += 32) {
    scores[t * EXPERTS + e] = sc[e];
    sel[e] = rank_key(sc[e] + bias[e]);
  }
  __syncwarp();
  if (GROUPS > 1) {
    // Group score: the sum of the group's two largest sel, in expert order as the reference does.
    float gs = NEG_INF;
    if (lane < GROUPS) {
      float t0 = NEG_INF, t1 = NEG_INF;
      for (int e = lane * PER_GROUP; e < (lane + 1) * PER_GROUP; ++e) {
        const float v = sel[e];
        if (v > t0) {
          t1 = t0;
          t0 = v;
        } else if (v > t1) {
          t1 = v;
        }
      }
      gs = rank_key(t0 + t1);
    }
    bool keep = false;
    for (int k = 0; k < TOP_GROUPS; ++k) {
      float v = gs;
      int who = (lane < GROUPS && !keep) ? lane : 32;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const int ow = __shfl_xor_sync(0xffffffffu, who, o);
        if (ow != 32 && (who == 32 || ov > v || (ov == v && ow < who))) {
          v = ov;
          who = ow;
        }
      }
      if (who == 32) break;
      if (lane == who) keep = true;
    }
    const unsigned kept = __ballot_sync(0xffffffffu, keep);
    for (int e = lane; e < EXPERTS; e += 32)
      if (!((kept >> (e / PER_GROUP)) & 1u)) sel[e] = UNAVAILABLE;
    __syncwarp();
  }
  int found = 0;
  for (int k = 0; k < TOP_K; ++k) {
    float v = NEG_INF;
    int who = EXPERTS;
    for (int e = lane; e < EXPERTS; e += 32)
      if (!isnan(sel[e]) && (who == EXPERTS || sel[e] > v)) {
        v = sel[e];
        who = e;
      }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, v, o);
      const int ow = __shfl_xor_sync(0xffffffffu, who, o);
      if (ow != EXPERTS && (who == EXPERTS || ov > v || (ov == v && ow < who))) {
        v = ov;
        who = ow;
      }
    }
    if (who == EXPERTS) break;
    if (lane == 0) chosen_s[warp][k] = who;
    __syncwarp();
    if (lane == who % 32) sel[who] = UNAVAILABLE;
    __syncwarp();
    found = k + 1;
  }
  if (lane == 0) {
    float sum = 0.0f;
    for (int k = 0; k < found; ++k) sum += sc[chosen_s[warp][k]];
    const float norm = NORMALIZE ? 1.0f / (sum + 1e-20f) : 1.0f;
    // A validated route fills every slot; one left empty (kept groups smaller than TOP_K) is expert 0, weight 0.
    for (int k = 0; k < TOP_K; ++k) {
      idx[t * TOP_K + k] = k < found ? (float)chosen_s[warp][k] : 0.0f;
      weights[t * TOP_K + k] = k < found ? sc[chosen_s[warp][k]] * norm * ROUTE_SCALE : 0.0f;
    }
  }
}
