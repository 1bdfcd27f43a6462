// The step guard (scalar S_MAX_GRAD_NORM): a step's update applies only when the averaged gradient's
// norm, norm * grad_scale in f64, is finite and at most the limit (+inf: any finite norm; negative:
// never). The CPU's `update_applies`, comparison for comparison.
__device__ __forceinline__ bool update_applies(const float* s, const float* norm) {
  const double n = (double)norm[0] * (double)s[S_GRAD_SCALE];
  const double finite_max = 1.7976931348623157e308;  // |n| <= DBL_MAX: finite (NaN compares false)
  return n >= -finite_max && n <= finite_max && n <= (double)s[S_MAX_GRAD_NORM];
}
