// The optimizer step over the trained parameters [0, N), reading the step's scalars (S_* indices):
//   the gradient is scaled by grad_scale (accumulation averaging) and by min(1, clip / |mean grad|)
//   when clip > 0 (the norm from grad_norm), then the parameter and its moments are updated in place.
//   Weight decay: [0, DECAY_END) at weight_decay, [DECAY_END, EMBEDDING_END) at embedding_decay, none
//   after. Moments are f32, or rounded to bf16 when BF16_MOMENTS. Math in f64 per element.
__device__ __forceinline__ float round_moment(float x) {
  if (!BF16_MOMENTS) return x;
  u16 h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(x));
  return __uint_as_float((u32)h << 16);
}

// b^t for t >= 0 by binary exponentiation — the CPU's `powi` (compiler-rt's __powidf2) step for step.
__device__ __forceinline__ double powi(double b, int t) {
  double r = 1.0;
  while (true) {
    if (t & 1) r *= b;
    t /= 2;
    if (t == 0) break;
    b *= b;
  }
  return r;
}

__device__ __forceinline__ double grad_factor(const float* s, const float* norm) {
  const double scale = (double)s[S_GRAD_SCALE], clip = (double)s[S_CLIP];
  const double n = (double)norm[0] * scale;  // the norm of the averaged gradient
  return scale * (clip > 0.0 && n > clip ? clip / n : 1.0);
}

__device__ __forceinline__ double decay_of(const float* s, i64 i) {
  return i < DECAY_END ? (double)s[S_WEIGHT_DECAY] : (i < EMBEDDING_END ? (double)s[S_EMBEDDING_DECAY] : 0.0);
}

