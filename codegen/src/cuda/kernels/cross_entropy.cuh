// Fused next-token cross-entropy. Row r = (b, i) has label tokens[b, i + SHIFT] when i + SHIFT < SEQ.
// One block per row: max, sum of exp (f64), lse; the row is overwritten with
// GRAD_SCALE * (softmax - onehot) / VALID (zeros on rows without a label): no second copy of the logits.
// The mean loss is summed into loss[0] by one atomicAdd per row, after ce_clear zeroed it (the order of
// those adds is the one nondeterministic step: the last bits of the loss, never of a gradient).
extern "C" __global__ void __launch_bounds__(CE_CLEAR_THREADS) ce_clear(T0* __restrict__ logits, const T1* __restrict__ tokens,
                                    T2* __restrict__ loss) {
  if (threadIdx.x == 0 && blockIdx.x == 0) loss[0] = 0.0f;
}

extern "C" __global__ void __launch_bounds__(CE_ROWS_THREADS) ce_rows(T0* __restrict__ logits,
                                                             const T1* __restrict__ tokens,
                                                             T2* __restrict__ loss) {
  __shared__ float scratch[33];
  __shared__ double scratch64[33];
  const i64 r = blockIdx.x;
  const i64 b = r / SEQ, i = r % SEQ;
  T0* row = logits + r * VOCAB;
  const float inv_n = 1.0f / (float)(VALID > 0 ? VALID : 1);
  if (i + SHIFT >= SEQ) {
    for (int c = threadIdx.x; c < VOCAB; c += THREADS) row[c] = 0.0f;
    return;
  }
  const float t = tokens[b * SEQ + i + SHIFT];
  const bool ok = t >= 0.0f && t == truncf(t) && t < (float)VOCAB;
  if (!ok) {
    for (int c = threadIdx.x; c < VOCAB; c += THREADS) row[c] = 0.0f;
    if (threadIdx.x == 0) atomicAdd(loss, __int_as_float(0x7fc00000));
    return;
  }
  const int label = (int)t;
  float mx = NEG_INF;
  for (int c = threadIdx.x; c < VOCAB; c += THREADS) mx = fmaxf(mx, row[c]);
  mx = block_max(mx, scratch);
  double sum = 0.0;
  for (int c = threadIdx.x; c < VOCAB; c += THREADS) sum += exp((double)(row[c] - mx));
  sum = block_sum_f64(sum, scratch64);
  const double lse = (double)mx + log(sum);
  const float target = row[label];
  __syncthreads();  // every thread has read row[label] before it is overwritten
  for (int c = threadIdx.x; c < VOCAB; c += THREADS) {
    float g = (float)exp((double)row[c] - lse) * GRAD_SCALE * inv_n;
    if (c == label) g -= GRAD_SCALE * inv_n;
    row[c] = g;
  }
  if (threadIdx.x == 0) atomicAdd(loss, (float)((lse - (double)target) / (double)(VALID > 0 ? VALID : 1)));
}
