// dtable[tokens[i], c] += dout[i, c]. One thread per column walks the positions in order, so rows hit by
// several positions sum in position order: deterministic and bit-identical to the CPU reference.
extern "C" __global__ void __launch_bounds__(EMBEDDING_BWD_THREADS) embedding_bwd(const T0* __restrict__ tokens,
                                                                const T1* __restrict__ dout,
                                                                T2* __restrict__ dtable) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= D) return;
  for (i64 i = 0; i < N; ++i) {
    const float t = tokens[i];
    if (t >= 0.0f && t == truncf(t) && t < (float)VOCAB) dtable[(i64)t * D + c] += dout[i * D + c];
  }
}
