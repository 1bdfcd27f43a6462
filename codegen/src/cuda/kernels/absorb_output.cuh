// The value up-projection after attention: o[t, h, e] = sum_c o_lat[t, h, c] W_UV_h[e, c], with W_UV_h
// rows h * HS + NOPE .. + DV of kv_b_proj [HEADS * HS, KVR]. A block per (head, TT tokens); the tokens'
// latents sit in shared memory, a warp per output channel e reads its row of W_UV_h once (coalesced)
// for all TT tokens and reduces across lanes in a fixed order.
extern "C" __global__ void __launch_bounds__(ABSORB_OUTPUT_THREADS) absorb_output(const T0* __restrict__ o_lat,
                                                                                  const T1* __restrict__ kv_b,
                                                                                  T2* __restrict__ o) {
  __shared__ float os[TT * KVR];
  const i64 h = blockIdx.x, t0 = (i64)blockIdx.y * TT;
  for (int e = threadIdx.x; e < TT * KVR; e += blockDim.x) {
    const i64 t = t0 + e / KVR;
    os[e] = t < TOKENS ? (float)o_lat[(t * HEADS + h) * KVR + e % KVR] : 0.0f;
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int e = warp; e < DV; e += warps) {
    float acc[TT];
#pragma unroll
    for (int i = 0; i < TT; ++i) acc[i] = 0.0f;
    for (int c = lane; c < KVR; c += 32) {
      const float w = (float)kv_b[(h * HS + NOPE + e) * KVR + c];
#pragma unroll
      for (int i = 0; i < TT; ++i) acc[i] += os[i * KVR + c] * w;
    }
#pragma unroll
    for (int i = 0; i < TT; ++i) {
      const float v = warp_sum(acc[i]);
      if (lane == 0 && t0 + i < TOKENS) o[((t0 + i) * HEADS + h) * DV + e] = v;
    }
  }
}
