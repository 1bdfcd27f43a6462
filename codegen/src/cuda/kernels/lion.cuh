// Lion: the sign of the interpolated momentum, decoupled weight decay (helpers in optimizer.cuh).
extern "C" __global__ void __launch_bounds__(LION_STEP_THREADS) lion_step(const T0* __restrict__ s, const T1* __restrict__ norm,
                                                           const T2* __restrict__ grad, T3* __restrict__ param,
                                                           T4* __restrict__ m) {
  if (!update_applies(s, norm)) return;
  const double f = grad_factor(s, norm);
  const double lr = s[S_LR], b1 = s[S_BETA1], b2 = s[S_BETA2];
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) {
    const double g = (double)(float)(grad[i] * f), mi = m[i];
    const double c = b1 * mi + (1.0 - b1) * g;
    const double sign = c > 0.0 ? 1.0 : (c < 0.0 ? -1.0 : 0.0);
    param[i] = (float)(param[i] - lr * (sign + decay_of(s, i) * param[i]));
    m[i] = round_moment((float)(b2 * mi + (1.0 - b2) * g));
  }
}
