// Integer arithmetic and bit tricks, one row of 22 results per element. Signed overflow and
// INT_MIN / -1 are avoided (undefined in C++); wrapping products are done on unsigned values.
extern "C" __global__ void int_ops(const int* __restrict__ a, const int* __restrict__ b, int bias, unsigned n,
                                   int* __restrict__ out) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int x = a[i];
    int y = b[i];
    unsigned ux = (unsigned)x;
    unsigned uy = (unsigned)y;
    unsigned s = uy & 31u;
    int* o = out + i * 22;
    o[0] = (int)(ux << s);
    o[1] = (int)(ux >> s);
    o[2] = x >> s;  // arithmetic shift of a signed value
    o[3] = min(x, y);
    o[4] = max(x, y);
    o[5] = (int)min(ux, uy);
    o[6] = (int)max(ux, uy);
    o[7] = x / y;  // truncates toward zero
    o[8] = x % y;  // has the sign of x
    o[9] = (int)(ux / uy);
    o[10] = (int)(ux % uy);
    o[11] = __popc(ux);
    o[12] = __clz(x);
    o[13] = __ffs(x);
    o[14] = (int)__brev(ux);
    o[15] = (int)(ux * uy + (unsigned)bias);
    o[16] = __mulhi(x, y);
    o[17] = (int)__umulhi(ux, uy);
    o[18] = (int)((ux & ~uy) ^ (ux | (uy << 3)));
    o[19] = (int)__byte_perm(ux, uy, 0x6152u);
    o[20] = (int)__sad(x, y, 5u);
    o[21] = (int)(((long long)x * (long long)y) >> 17);
}
