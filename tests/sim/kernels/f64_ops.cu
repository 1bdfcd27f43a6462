// Double-precision arithmetic: fma, division, sqrt, a scalar f64 multiply, conversions and rounding.
extern "C" __global__ void f64_ops(const double* __restrict__ a, const double* __restrict__ b,
                                   const double* __restrict__ c, double s, unsigned long long n,
                                   double* __restrict__ out, long long* __restrict__ iout) {
    unsigned long long i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    double x = a[i], y = b[i], z = c[i];
    double* o = out + i * 8;
    o[0] = fma(x, y, z);
    o[1] = x / y;
    o[2] = sqrt(fabs(x));
    o[3] = x * s;
    o[4] = x + y;
    o[5] = (double)(float)x;
    o[6] = floor(x);
    o[7] = rint(z);
    iout[i * 2] = (long long)z;  // truncation toward zero
    iout[i * 2 + 1] = llrint(z);  // round half to even
}
