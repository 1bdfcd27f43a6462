// Rotary embedding in place at given positions, one block per token: token t sits at
// positions[t / PER_SEQ] + t % PER_SEQ (a decode step's sequences each resume where their cache ends).
extern "C" __global__ void __launch_bounds__(ROPE_AT_THREADS) rope_at(const T0* __restrict__ positions,
                                                                      T1* __restrict__ x) {
  __shared__ float buf[HEADS * DIM];
  const i64 t = blockIdx.x;
  const float pos = (float)(as_index(positions[t / PER_SEQ]) + (i32)(t % PER_SEQ));
  rope_token<T1, false>(x + t * ROW_STRIDE, pos, buf);
}
