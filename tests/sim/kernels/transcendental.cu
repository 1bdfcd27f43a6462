// Single-precision math library functions and intrinsics, one output buffer per function so that
// each can be held to its own documented error bound. x in [-10, 10], p in [2^-10, 2^10],
// t in [-pi, pi].
extern "C" __global__ void transcendental(const float* __restrict__ x, const float* __restrict__ p,
                                          const float* __restrict__ t, unsigned n, float* o_expf,
                                          float* o_fast_expf, float* o_logf, float* o_fast_logf, float* o_rsqrtf,
                                          float* o_sqrtf, float* o_tanhf, float* o_sinf, float* o_cosf,
                                          float* o_fast_sinf, float* o_fast_cosf, float* o_fdividef, float* o_div) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float xi = x[i], pi = p[i], ti = t[i];
    o_expf[i] = expf(xi);
    o_fast_expf[i] = __expf(xi);
    o_logf[i] = logf(pi);
    o_fast_logf[i] = __logf(pi);
    o_rsqrtf[i] = rsqrtf(pi);
    o_sqrtf[i] = sqrtf(pi);
    o_tanhf[i] = tanhf(xi);
    o_sinf[i] = sinf(xi);
    o_cosf[i] = cosf(xi);
    o_fast_sinf[i] = __sinf(ti);
    o_fast_cosf[i] = __cosf(ti);
    o_fdividef[i] = __fdividef(xi, pi);
    o_div[i] = xi / pi;
}
