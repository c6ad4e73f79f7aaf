// Causal depthwise conv1d + SiLU forward on the CPU (inference path of the Mamba mixer):
//   out[b, c, t] = silu(bias[c] + sum_j w[c, j] * x[b, c, t - (W - 1) + j])   (x = 0 before t = 0)
// One pass over x (B, C, L) contiguous fp32, OpenMP over rows, the tap sum and the SiLU vectorized
// over time (AVX2: 8 steps per vector; SiLU with a polynomial exp, as in the scan kernel).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "fast_math.h"


namespace {

// silu(acc) = acc / (1 + exp(-acc)), exp(-acc) = 2^(-acc log2 e) (fast_math.h: rel. error 2e-7).
inline float silu1(float acc) { return acc / (1.f + mmvssm_fast_math::exp2_fast_scalar(-acc * 1.4426950408889634f)); }

constexpr int kMaxWidth = 8;

#if defined(__AVX2__) && defined(__FMA__)
// silu(acc) for 8 lanes.
inline __m256 silu8(__m256 acc) {
  const __m256 e = mmvssm_fast_math::exp2_avx2(_mm256_mul_ps(acc, _mm256_set1_ps(-1.4426950408889634f)));
  return _mm256_div_ps(acc, _mm256_add_ps(e, _mm256_set1_ps(1.f)));
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
        orow[t] = silu1(acc);
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
        orow[t] = silu1(acc);
      }
    }
  });
  return out;
}
