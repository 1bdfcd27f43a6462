// Warp-level primitives on full warps: xor-butterfly and shfl_down sums (every lane's value is
// written, so the lanes whose source is out of range are checked too), an inclusive scan with
// shfl_up, ballot/any/all votes, an indexed shuffle, and a width-8 shfl_down.
extern "C" __global__ void warp_reduce(const float* __restrict__ x, const int* __restrict__ v, float* xor_sum,
                                       float* down_sum, int* scan, unsigned* ballot, int* votes, float* gather,
                                       float* seg_down) {
    const unsigned full = 0xffffffffu;
    unsigned gid = blockIdx.x * blockDim.x + threadIdx.x;
    unsigned lane = threadIdx.x & 31u;
    unsigned warp = gid >> 5;
    float xi = x[gid];
    int vi = v[gid];

    float s = xi;
    for (int m = 16; m >= 1; m >>= 1) s += __shfl_xor_sync(full, s, m);
    xor_sum[gid] = s;

    float d = xi;
    for (int off = 16; off >= 1; off >>= 1) d += __shfl_down_sync(full, d, off);
    down_sum[gid] = d;

    int sc = vi;
    for (int off = 1; off < 32; off <<= 1) {
        int up = __shfl_up_sync(full, sc, off);
        if (lane >= (unsigned)off) sc += up;
    }
    scan[gid] = sc;

    unsigned bal = __ballot_sync(full, xi > 0.0f);
    if (lane == 0) ballot[warp] = bal;
    votes[gid * 2] = __any_sync(full, vi > 90);
    votes[gid * 2 + 1] = __all_sync(full, vi > -95);

    gather[gid] = __shfl_sync(full, xi, (lane * 7u + 3u) & 31u);
    seg_down[gid] = __shfl_down_sync(full, xi, 3, 8);
}
