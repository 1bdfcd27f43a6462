// Routed experts over the expert-sorted rows: offsets[e] .. offsets[e + 1] (written on the device by
// dispatch) are expert e's rows. Tile t of the grid's first dimension is found by walking the experts'
// row-tile counts (at most ROWS / BM + EXPERTS tiles in all); surplus blocks exit at once.
__device__ __forceinline__ bool expert_tile(const i32* __restrict__ offsets, int tile, int& e, int& r0, int& rows,
                                            int& m0) {
  for (e = 0; e < EXPERTS; ++e) {
    r0 = as_index(offsets[e]);
    rows = as_index(offsets[e + 1]) - r0;
    const int tiles = (rows + BM - 1) / BM;
    if (tile < tiles) {
      m0 = tile * BM;
      return true;
    }
    tile -= tiles;
  }
  return false;
}
