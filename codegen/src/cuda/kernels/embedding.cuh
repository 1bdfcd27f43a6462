// out[i, :] = table[tokens[i], :]; an invalid id (not an integer in [0, VOCAB)) poisons its row with NaN.
extern "C" __global__ void __launch_bounds__(EMBEDDING_THREADS) embedding(const T0* __restrict__ tokens,
                                                            const T1* __restrict__ table, T2* __restrict__ out) {
  const i64 i = blockIdx.x;
  const float t = tokens[i];
  const bool ok = t >= 0.0f && t == truncf(t) && t < (float)VOCAB;
  const i64 row = ok ? (i64)t : 0;
  for (int c = threadIdx.x; c < D; c += blockDim.x) out[i * D + c] = ok ? table[row * D + c] : __int_as_float(0x7fc00000);
}
