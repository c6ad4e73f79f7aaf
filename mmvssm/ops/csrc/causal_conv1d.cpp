// Causal depthwise conv1d + SiLU forward on the CPU (inference path of the Mamba mixer):
//   out[b, c, t] = silu(bias[c] + sum_j w[c, j] * x[b, c, t - (W - 1) + j])   (x = 0 before t = 0)
// One pass over x (B, C, L) contiguous fp32, OpenMP over rows, the tap sum and the SiLU vectorized
// over time (AVX2: 8 steps per vector; SiLU with a polynomial exp, as in the scan kernel).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace {

// exp(x) for the SiLU: 2^(x log2 e) with a degree-5 polynomial on [-0.5, 0.5] and exponent bits
// (max rel. error 2e-7); x clamped to [-87, 88] (silu is then x or 0 to fp32 precision anyway).
inline float exp_poly(float x) {
  x = std::min(std::max(x * 1.4426950408889634f, -126.f), 126.f);
  const float magic = 12582912.f;
  const float j = x + magic;
  const float f = x - (j - magic);
  float p = 0.001326472731307149f;
  p = p * f + 0.009671512991189957f;
  p = p * f + 0.05550733581185341f;
  p = p * f + 0.24022242426872253f;
  p = p * f + 0.6931470036506653f;
  p = p * f + 1.0f;
  int32_t jb, pb;
  std::memcpy(&jb, &j, 4);
  std::memcpy(&pb, &p, 4);
  pb += static_cast<int32_t>(static_cast<uint32_t>(jb) << 23);
  std::memcpy(&p, &pb, 4);
  return p;
}

constexpr int kMaxWidth = 8;

#if defined(__AVX2__) && defined(__FMA__)
// silu(acc) for 8 lanes with the same polynomial exp as exp_poly.
inline __m256 silu8(__m256 acc) {
  __m256 x = _mm256_mul_ps(acc, _mm256_set1_ps(-1.4426950408889634f));
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-126.f)), _mm256_set1_ps(126.f));
  const __m256 magic = _mm256_set1_ps(12582912.f);
  const __m256 j = _mm256_add_ps(x, magic);
  const __m256 f = _mm256_sub_ps(x, _mm256_sub_ps(j, magic));
  __m256 p = _mm256_set1_ps(0.001326472731307149f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.009671512991189957f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.05550733581185341f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.24022242426872253f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.6931470036506653f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(j), 23);
  p = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
  return _mm256_div_ps(acc, _mm256_add_ps(p, _mm256_set1_ps(1.f)));
}
#endif

}  // namespace

at::Tensor causal_conv1d_silu_fwd(const at::Tensor& x, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 3 && x.is_contiguous(),
              "mmvssm._C.causal_conv1d_silu_fwd: x must be a contiguous fp32 (B, C, L) CPU tensor");
  const int64_t Bsz = x.size(0), C = x.size(1), L = x.size(2);
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == C && weight.scalar_type() == at::kFloat &&
                  weight.is_contiguous() && weight.size(1) >= 1 && weight.size(1) <= kMaxWidth,
              "mmvssm._C.causal_conv1d_silu_fwd: weight must be a contiguous fp32 (C, W) tensor, W <= 8");
  if (bias.has_value())
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == C && bias->scalar_type() == at::kFloat &&
                    bias->is_contiguous(),
                "mmvssm._C.causal_conv1d_silu_fwd: bias must be a contiguous fp32 (C,) tensor");
  const int W = static_cast<int>(weight.size(1));
  at::Tensor out = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* bp = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  at::parallel_for(0, Bsz * C, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t c = r % C;
      const float* xr = xp + r * L;
      float* orow = op + r * L;
      float w[kMaxWidth];
      for (int j = 0; j < W; ++j) w[j] = wp[c * W + j];
      const float b0 = bp ? bp[c] : 0.f;
      const int64_t head = std::min<int64_t>(W - 1, L);
      for (int64_t t = 0; t < head; ++t) {  // taps reaching before t = 0 see zeros
        float acc = b0;
        for (int j = W - 1 - static_cast<int>(t); j < W; ++j) acc += w[j] * xr[t - (W - 1) + j];
        orow[t] = acc / (1.f + exp_poly(-acc));
      }
      int64_t t = head;
#if defined(__AVX2__) && defined(__FMA__)
      __m256 wv[kMaxWidth];
      for (int j = 0; j < W; ++j) wv[j] = _mm256_set1_ps(w[j]);
      for (; t + 8 <= L; t += 8) {
        __m256 acc = _mm256_set1_ps(b0);
        for (int j = 0; j < W; ++j) acc = _mm256_fmadd_ps(wv[j], _mm256_loadu_ps(xr + t - (W - 1) + j), acc);
        _mm256_storeu_ps(orow + t, silu8(acc));
      }
#endif
      for (; t < L; ++t) {
        float acc = b0;
        for (int j = 0; j < W; ++j) acc += w[j] * xr[t - (W - 1) + j];
        orow[t] = acc / (1.f + exp_poly(-acc));
      }
    }
  });
  return out;
}
