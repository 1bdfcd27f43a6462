// Appends the new tokens' latents to an FP8 cache, a block per new token, a warp per TILE-value group
// of the latent: scale = max(amax, 1e-4) / 448, e4m3 = round-to-nearest-even(x / scale), saturated
// (DeepSeek-V3's fine-grained scaling, FlashMLA's cache layout); the roped key is stored as it is.
extern "C" __global__ void __launch_bounds__(CACHE_WRITE_THREADS) cache_write(const T0* __restrict__ positions,
                                                                              const T1* __restrict__ ckv,
                                                                              const T2* __restrict__ kva,
                                                                              T3* __restrict__ latent,
                                                                              T4* __restrict__ scales,
                                                                              T5* __restrict__ rope) {
  const i64 t = blockIdx.x;
  bool in_cache;
  const i64 row = cache_row(positions, t, &in_cache);
  if (!in_cache) return;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int g = warp; g < GROUPS; g += warps) {
    const int c0 = g * TILE, c1 = c0 + TILE < KVR ? c0 + TILE : KVR;
    float amax = 0.0f;
    for (int c = c0 + lane; c < c1; c += 32) amax = fmaxf(amax, fabsf((float)ckv[t * KVR + c]));
    amax = warp_max(amax);
    const float s = fp8_scale(amax);
    for (int c = c0 + lane; c < c1; c += 32) latent[row * KVR + c].bits = to_e4m3((float)ckv[t * KVR + c] / s);
    if (lane == 0) scales[row * GROUPS + g] = s;
  }
  for (int c = threadIdx.x; c < ROPE; c += blockDim.x) rope[row * ROPE + c] = (float)kva[t * KVA_STRIDE + KVR + c];
}
