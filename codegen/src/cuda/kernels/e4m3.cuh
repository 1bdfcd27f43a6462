// The f32 value of an E4M3 byte (sign, 4 exponent bits biased by 7, 3 mantissa bits; exponent 0 is
// subnormal, m * 2^-9; S.1111.111 is NaN), decoded in integer arithmetic.
__device__ __forceinline__ float from_e4m3(u8 b) {
  const u32 s = (u32)(b & 0x80) << 24, e = (b >> 3) & 0xf, m = b & 7;
  if (e == 15 && m == 7) return __int_as_float(0x7fc00000);
  if (e == 0) return s ? -(float)m * 0.001953125f : (float)m * 0.001953125f;
  return __uint_as_float(s | ((e + 120) << 23) | (m << 20));
}
