// ---- the latent KV cache ----
// The cache row of new token t (of PER_SEQ per sequence) and whether it lies in the cache.
__device__ __forceinline__ i64 cache_row(const T0* positions, i64 t, bool* in_cache) {
  const i64 b = t / PER_SEQ;
  const i64 p = (i64)as_index(positions[b]) + t % PER_SEQ;
  *in_cache = p >= 0 && p < LEN;
  return b * LEN + p;
}
