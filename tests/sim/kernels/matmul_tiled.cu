// C = A (M x K) * B (K x N), all row-major f32, 16x16 tiles staged in dynamic shared memory
// (2 * 16 * 16 * 4 = 2048 bytes, passed with --smem). M, N, K are not multiples of 16.
#define TILE 16
extern "C" __global__ void matmul_tiled(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                                        int M, int N, int K) {
    extern __shared__ float smem[];
    float* As = smem;
    float* Bs = smem + TILE * TILE;
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * TILE + ty;
    int col = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (int t = 0; t < (K + TILE - 1) / TILE; ++t) {
        int ak = t * TILE + tx;
        int bk = t * TILE + ty;
        As[ty * TILE + tx] = (row < M && ak < K) ? A[row * K + ak] : 0.0f;
        Bs[ty * TILE + tx] = (bk < K && col < N) ? B[bk * N + col] : 0.0f;
        __syncthreads();
        for (int k = 0; k < TILE; ++k) acc += As[ty * TILE + k] * Bs[k * TILE + tx];
        __syncthreads();
    }
    if (row < M && col < N) C[row * N + col] = acc;
}
