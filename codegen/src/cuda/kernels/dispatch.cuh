// Dispatch: sort the N = TOKENS * TOP_K (token, slot) pairs by expert, stably in pair order, and gather
// their inputs. Four launches: count (a block per expert), scan (offsets), place (a block per expert
// walks the pairs in order, ranks its matches with warp ballots: stable, no atomics), gather.
// perm[row] = pair, inv[pair] = row, offsets[e] = first row of expert e (offsets[EXPERTS] = N).
__device__ __forceinline__ int expert_of(const i32* idx, i64 k) { return expert_index(idx[k], EXPERTS); }

extern "C" __global__ void __launch_bounds__(DISPATCH_COUNT_THREADS) dispatch_count(const T0* __restrict__ idx,
                                                                const T1* __restrict__ x,
                                                                T2* __restrict__ perm, T3* __restrict__ inv,
                                                                T4* __restrict__ offsets, T5* __restrict__ xp) {
  __shared__ float scratch[33];
  const int e = blockIdx.x;
  float n = 0.0f;
  for (i64 k = threadIdx.x; k < N; k += 256) n += expert_of(idx, k) == e ? 1.0f : 0.0f;
  n = block_sum(n, scratch);  // exact: counts stay below 2^24
  if (threadIdx.x == 0) {
    offsets[e + 1] = n;
    if (e == 0) offsets[0] = 0.0f;
  }
}

extern "C" __global__ void __launch_bounds__(DISPATCH_SCAN_THREADS) dispatch_scan(const T0* __restrict__ idx, const T1* __restrict__ x,
                                         T2* __restrict__ perm, T3* __restrict__ inv,
                                         T4* __restrict__ offsets, T5* __restrict__ xp) {
  if (threadIdx.x != 0) return;
  float run = 0.0f;
  for (int e = 0; e <= EXPERTS; ++e) {
    run += offsets[e];
    offsets[e] = run;
  }
}

extern "C" __global__ void __launch_bounds__(DISPATCH_PLACE_THREADS) dispatch_place(const T0* __restrict__ idx,
                                                                const T1* __restrict__ x,
                                                                T2* __restrict__ perm, T3* __restrict__ inv,
                                                                T4* __restrict__ offsets, T5* __restrict__ xp) {
  __shared__ int warp_n[8];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int e = blockIdx.x;
  int next = as_index(offsets[e]);
  for (i64 k0 = 0; k0 < N; k0 += 256) {
    const i64 k = k0 + threadIdx.x;
    const bool hit = k < N && expert_of(idx, k) == e;
    const unsigned ballot = __ballot_sync(0xffffffffu, hit);
    if (lane == 0) warp_n[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, total = 0;
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      before += w < warp ? warp_n[w] : 0;
      total += warp_n[w];
    }
    if (hit) {
      const int row = next + before + __popc(ballot & ((1u << lane) - 1u));
      perm[row] = (float)k;
      inv[k] = (float)row;
    }
    next += total;
    __syncthreads();
  }
}

extern "C" __global__ void __launch_bounds__(DISPATCH_GATHER_THREADS) dispatch_gather(const T0* __restrict__ idx,
                                                                 const T1* __restrict__ x,
                                                                 T2* __restrict__ perm,
                                                                 T3* __restrict__ inv,
                                                                 T4* __restrict__ offsets,
                                                                 T5* __restrict__ xp) {
  const i64 row = blockIdx.x;
  const i64 t = (i64)as_index(perm[row]) / TOP_K;
  for (int c = threadIdx.x; c < D; c += blockDim.x) xp[row * D + c] = x[t * D + c];
}
