// AdamW: bias-corrected moments, decoupled weight decay (helpers in optimizer.cuh).
extern "C" __global__ void __launch_bounds__(ADAMW_STEP_THREADS) adamw_step(const T0* __restrict__ s, const T1* __restrict__ norm,
                                                            const T2* __restrict__ grad, T3* __restrict__ param,
                                                            T4* __restrict__ m, T5* __restrict__ v) {
  if (!update_applies(s, norm)) return;
  const double f = grad_factor(s, norm);
  const double lr = s[S_LR], b1 = s[S_BETA1], b2 = s[S_BETA2], eps = s[S_EPS];
  const int t = (int)s[S_STEP];
  const double c1 = 1.0 - powi(b1, t), c2 = 1.0 - powi(b2, t);
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) {
    const double g = (double)(float)(grad[i] * f);
    const double mi = b1 * m[i] + (1.0 - b1) * g;
    const double vi = b2 * v[i] + (1.0 - b2) * g * g;
    m[i] = round_moment((float)mi);
    v[i] = round_moment((float)vi);
    const double update = (mi / c1) / (sqrt(vi / c2) + eps) + decay_of(s, i) * param[i];
    param[i] = (float)(param[i] - lr * update);
  }
}
