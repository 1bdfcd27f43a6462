// Rotary embedding in place, one block per token at position t % SEQ (rope_token).
extern "C" __global__ void __launch_bounds__(ROPE_THREADS) rope(T0* __restrict__ x) {
  __shared__ float buf[HEADS * DIM];
  const i64 t = blockIdx.x;
  rope_token<T0, INVERSE>(x + t * ROW_STRIDE, (float)(t % SEQ), buf);
}
