// Appends the new tokens' latents to the cache, a block per new token: the normalized latent
// ckv[t] (KVR values) and the roped key kva[t * KVA_STRIDE + KVR ..][..ROPE] go to cache row
// b * LEN + positions[b] + t % PER_SEQ (not stored past the cache's end).
extern "C" __global__ void __launch_bounds__(CACHE_WRITE_THREADS) cache_write(const T0* __restrict__ positions,
                                                                              const T1* __restrict__ ckv,
                                                                              const T2* __restrict__ kva,
                                                                              T3* __restrict__ latent,
                                                                              T4* __restrict__ rope) {
  const i64 t = blockIdx.x;
  bool in_cache;
  const i64 row = cache_row(positions, t, &in_cache);
  if (!in_cache) return;
  for (int c = threadIdx.x; c < KVR; c += blockDim.x) latent[row * KVR + c] = (float)ckv[t * KVR + c];
  for (int c = threadIdx.x; c < ROPE; c += blockDim.x) rope[row * ROPE + c] = (float)kva[t * KVA_STRIDE + KVR + c];
}
