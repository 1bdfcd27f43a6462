extern "C" __global__ void __launch_bounds__(LATENT_ATTENTION_THREADS) latent_attention(
    const T0* __restrict__ positions, const T1* __restrict__ q_lat, const T2* __restrict__ q,
    const T3* __restrict__ latent, const T4* __restrict__ rope, T5* __restrict__ o_lat) {
  latent_attention_body<false, T3, T4, T5>(positions, q_lat, q, latent, nullptr, rope, o_lat);
}
