// out[b, i] = tokens[b, min(i + SHIFT, SEQ - 1)].
extern "C" __global__ void __launch_bounds__(SHIFT_TOKENS_THREADS) shift_tokens(const T0* __restrict__ tokens, T1* __restrict__ out) {
  const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (i64)BATCH * SEQ) return;
  const i64 b = i / SEQ, t = i % SEQ;
  const i64 src = t + SHIFT < SEQ ? t + SHIFT : SEQ - 1;
  out[i] = tokens[b * SEQ + src];
}
