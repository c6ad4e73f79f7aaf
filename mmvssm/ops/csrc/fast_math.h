// Fast exp2 shared by the CPU kernels (selective_scan.cpp, causal_conv1d.cpp): a degree-5 polynomial
// on the fractional part plus exponent bit tricks, scalar and AVX2 (8 lanes).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace mmvssm_fast_math {

// exp2 on [-0.5, 0.5]: p(f) = 1 + f q(f) ~ 2^f, max relative error 1.9e-7 (relative minimax fit with
// p(0) = 1 exactly, so decays close to 1 carry no bias that would compound over long sequences).
constexpr float kE0 = 1.0f, kE1 = 0.6931470036506653f, kE2 = 0.24022242426872253f,
                kE3 = 0.05550733581185341f, kE4 = 0.009671512991189957f, kE5 = 0.001326472731307149f;

// 2^x for x in [-126, 127] (clamped), scalar.
inline float exp2_fast_scalar(float x) {
  x = std::min(std::max(x, -126.f), 127.f);
  const float magic = 12582912.f;  // 1.5 * 2^23: x + magic rounds x to an integer kept in the low bits
  float j = x + magic;
  float n = j - magic;
  float f = x - n;
  float p = kE5;
  p = p * f + kE4;
  p = p * f + kE3;
  p = p * f + kE2;
  p = p * f + kE1;
  p = p * f + kE0;
  int32_t jb, pb;
  std::memcpy(&jb, &j, 4);
  std::memcpy(&pb, &p, 4);
  pb += static_cast<int32_t>(static_cast<uint32_t>(jb) << 23);
  std::memcpy(&p, &pb, 4);
  return p;
}

#if defined(__AVX2__) && defined(__FMA__)
// 2^x for 8 lanes, clamped below at -126 and, when kClampHigh, above at 127 (without it the caller
// guarantees x <= 127, e.g. x <= 0); Estrin scheme: a shorter dependency chain than Horner (the scan is
// latency-bound for small N). NaN stays NaN: the clamps take x as their second operand, which max / min
// return when it is NaN. (The exponent is added to the bits of the NaN polynomial, so a NaN whose payload
// has nonzero low 8 bits, which no arithmetic produces, may come out as a number.)
template <bool kClampHigh = true>
inline __m256 exp2_avx2(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-126.f), x);
  if constexpr (kClampHigh) x = _mm256_min_ps(_mm256_set1_ps(127.f), x);
  const __m256 magic = _mm256_set1_ps(12582912.f);
  const __m256 j = _mm256_add_ps(x, magic);
  const __m256 f = _mm256_sub_ps(x, _mm256_sub_ps(j, magic));
  const __m256 f2 = _mm256_mul_ps(f, f);
  const __m256 p01 = _mm256_fmadd_ps(_mm256_set1_ps(kE1), f, _mm256_set1_ps(kE0));
  const __m256 p23 = _mm256_fmadd_ps(_mm256_set1_ps(kE3), f, _mm256_set1_ps(kE2));
  const __m256 p45 = _mm256_fmadd_ps(_mm256_set1_ps(kE5), f, _mm256_set1_ps(kE4));
  const __m256 p = _mm256_fmadd_ps(_mm256_fmadd_ps(p45, f2, p23), f2, p01);
  const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(j), 23);
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}
#endif

}  // namespace mmvssm_fast_math
