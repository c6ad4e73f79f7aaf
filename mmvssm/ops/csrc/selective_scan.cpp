// Fused CPU selective scan (mamba-ssm ``selective_scan_fn`` semantics), forward and backward.
//
// Layout: u, delta, z, out (B, D, L) contiguous; A (D, N); B, C (B, G, N, L) contiguous; D, delta_bias (D,).
// Channel d uses group d / (D / G).
//
// Strategy
//   * OpenMP (at::parallel_for) over work items = (batch, block of W channels of one group).
//   * SIMD over channels: one AVX-512 vector holds 16 channels (chosen at run time when the CPU has it,
//     MMVSSM_NO_AVX512=1 turns it off), one AVX2 vector 8; the state h[n] is one vector per n. The
//     per-item kernels live in scan_item_kernels.inc, the width-generic members of the vector-ops structs
//     (softplus, sigmoid, row loads / stores, gather / scatter) in lane_ops_common.inc; both are compiled
//     once per instruction set.
//   * Forward in time tiles of 512 steps across a thread's items (B / C tile stays in cache).
//     Time is processed in blocks of 8 steps: the 8x8 (channel x time) tiles of u / delta / z / out are
//     transposed in registers, so no layout copy is made around the kernel.
//   * exp(delta * A) = exp2(delta * (A * log2 e)) with a degree-5 polynomial + exponent bit tricks
//     (max rel. error 1.9e-7; AVX-512: a 16-entry table of 2^(i/16), a degree-3 polynomial and
//     vscalefps, 1.1e-7), computed in registers; nothing of size (B, D, L, N) is materialized.
//   * Channels of a group that do not fill a vector, and fp64 inputs (for gradcheck), go through the
//     same code with a scalar "vector" type (W = 1).
//   * N = 1 forward: own 4-channel kernel (rows of time steps; the recurrence as an in-register lane
//     scan with AVX-512, with 4 x 4 transposes with AVX2; rows staggered when their stride collides mod
//     4 KiB); outputs >= 32 MiB are written with non-temporal full-line stores.
//   * Forward optionally saves the state at every K-th step (K * N ~ 2048); backward recomputes each
//     chunk from its saved state (as mamba-ssm does with its 2048-step chunks), then runs the reverse scan.
//     dB / dC are reduced across the channels of a vector with a transposing horizontal add and
//     accumulated in per-thread buffers, summed at the end.
#pragma GCC diagnostic ignored "-Wignored-attributes"
// GCC 12's AVX-512 intrinsics pass their own _mm512_undefined_ps() as a don't-care operand, and GCC 12
// warns that it "may be used uninitialized" once per inlined use (GCC bug 105593): 258 false warnings
// here. The warning is reported at the intrinsic's line in its header, so it is turned off for the
// headers' lines, on GCC 12 only; that also hides a real uninitialized variable of ours when it is
// reported inside an intrinsic (other compilers still report it).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic pop
#endif

#include "fast_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <cstdlib>
#endif

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MMVSSM_AVX2 1
#endif

namespace {

using namespace mmvssm_fast_math;
using int64 = int64_t;
constexpr double kLog2e = 1.4426950408889634;
constexpr int TB = 8;  // time block

// log1p(e) / e on [0, 1], degree 7, relative minimax (max rel. error of e q(e) vs log1p: 3.3e-7).
constexpr float kL0 = 0.9999998211860657f, kL1 = -0.4999740421772003f, kL2 = 0.33275479078292847f,
                kL3 = -0.2449546456336975f, kL4 = 0.1774524301290512f, kL5 = -0.10768172889947891f,
                kL6 = 0.04408963397145271f, kL7 = -0.00853920727968216f;

template <typename T> inline float to_f(T x) { return static_cast<float>(x); }
template <typename T> inline T from_f(float x) { return static_cast<T>(x); }

// ------------------------------------------------------------------------------------------------
// Scalar "vector" types (W = 1)
// ------------------------------------------------------------------------------------------------
template <typename T_>
struct ScalarOps {
  using T = T_;
  using vec = T_;
  static constexpr int W = 1;
  static vec zero() { return T(0); }
  static vec set1(T x) { return x; }
  static vec add(vec a, vec b) { return a + b; }
  static vec sub(vec a, vec b) { return a - b; }
  static vec mul(vec a, vec b) { return a * b; }
  static vec fma(vec a, vec b, vec c) { return a * b + c; }
  static vec exp2(vec x) {
    if constexpr (std::is_same_v<T, float>) return exp2_fast_scalar(x);
    else return std::exp2(x);
  }
  static vec softplus(vec x) { return x > T(20) ? x : std::log1p(std::exp(x)); }
  static vec sigmoid(vec x) { return T(1) / (T(1) + std::exp(-x)); }
  static vec load_lanes(const T* p) { return *p; }
  static void store_lanes(T* p, vec v) { *p = v; }
  static vec gather(const T* p, int64) { return *p; }
  static void scatter(T* p, int64, vec v) { *p = v; }
  // out[t] = row(0)[t] for t < tc, 0 after.
  template <typename in_t>
  static void load_block(const in_t* p, int64, int tc, vec* out) {
    for (int t = 0; t < TB; ++t) out[t] = t < tc ? static_cast<T>(to_f_or_d<in_t>(p[t])) : T(0);
  }
  template <typename in_t>
  static void store_block(in_t* p, int64, int tc, const vec* in) {
    for (int t = 0; t < tc; ++t) p[t] = static_cast<in_t>(in[t]);
  }
  static void reduce8_add(const vec* in, T* dst, int tc) {
    for (int t = 0; t < tc; ++t) dst[t] += in[t];
  }
  template <typename in_t>
  static T to_f_or_d(in_t x) {
    if constexpr (std::is_same_v<in_t, double>) return static_cast<T>(x);
    else return static_cast<T>(static_cast<float>(x));
  }
};

#ifdef MMVSSM_AVX2
// ------------------------------------------------------------------------------------------------
// AVX2: 8 channels per vector
// ------------------------------------------------------------------------------------------------
inline void transpose8(__m256* r) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// 4 rows of 8 steps, r[i] = (channel i, steps 0..7) -> r[k] = [step k | step k + 4] over the 4 channels
// (a 4 x 4 transpose in each 128-bit half; its own inverse).
__attribute__((always_inline)) inline void transpose4x2(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  r[0] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  r[1] = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  r[2] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  r[3] = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
}

// Recurrence over one 8-step part of 4 rows: a[i], b[i] = rows (channel i, 8 steps), i < 4; h (over the 4
// channels) advanced 8 steps; returns the states in the same row layout in a[].
__attribute__((always_inline)) inline void scan_part(__m256* a, __m256* b, __m128& h) {
  transpose4x2(a);  // a[k] = [step k | step k + 4] over the 4 channels
  transpose4x2(b);
  __m128 hs[8];
#pragma GCC unroll 8
  for (int t = 0; t < 8; ++t) {
    const __m128 at = t < 4 ? _mm256_castps256_ps128(a[t]) : _mm256_extractf128_ps(a[t - 4], 1);
    const __m128 bt = t < 4 ? _mm256_castps256_ps128(b[t]) : _mm256_extractf128_ps(b[t - 4], 1);
    h = _mm_fmadd_ps(at, h, bt);
    hs[t] = h;
  }
  for (int k = 0; k < 4; ++k) a[k] = _mm256_set_m128(hs[k + 4], hs[k]);
  transpose4x2(a);
}

namespace base_isa {
#include "lane_ops_common.inc"
}  // namespace base_isa

struct Avx2Ops : base_isa::LaneOpsCommon<Avx2Ops, __m256, 8> {
  using T = float;
  using vec = __m256;
  static constexpr int W = 8;
  static vec zero() { return _mm256_setzero_ps(); }
  static vec set1(float x) { return _mm256_set1_ps(x); }
  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  static vec sub(vec a, vec b) { return _mm256_sub_ps(a, b); }
  static vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
  static vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  static vec max(vec a, vec b) { return _mm256_max_ps(a, b); }
  static vec min(vec a, vec b) { return _mm256_min_ps(a, b); }
  static vec abs(vec x) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), x); }
  static vec exp2(vec x) { return exp2_avx2(x); }
  // 1 / x for finite x >= 1: rcp estimate + one Newton step (rel. error ~1e-7; inf gives NaN, 0 * inf).
  static vec rcp(vec x) {
    const vec r = _mm256_rcp_ps(x);
    return _mm256_fmadd_ps(r, _mm256_fnmadd_ps(x, r, _mm256_set1_ps(1.f)), r);
  }
  // exp2 for x <= 0 (or NaN) only: one clamp fewer.
  static vec exp2_nonpos(vec x) { return exp2_avx2<false>(x); }
  static vec load_lanes(const float* p) { return _mm256_loadu_ps(p); }
  static void store_lanes(float* p, vec v) { _mm256_storeu_ps(p, v); }
  static void stream_row(float* p, vec v) { _mm256_stream_ps(p, v); }  // p 32-byte aligned
  // a row's 8-step parts (here the row itself), and back
  static __m256 part(vec v, int) { return v; }
  static vec join(const __m256* parts) { return parts[0]; }
  // Rows p + i * ld (i < 8 channels), time t < tc (zero padded) -> out[t] = vector over channels.
  template <typename in_t>
  static void load_block(const in_t* p, int64 ld, int tc, vec* out) {
    if constexpr (std::is_same_v<in_t, float>) {
      if (tc == TB) {
        for (int i = 0; i < 8; ++i) out[i] = _mm256_loadu_ps(p + i * ld);
        transpose8(out);
        return;
      }
    }
    alignas(32) float tmp[8][8];
    for (int i = 0; i < 8; ++i)
      for (int t = 0; t < 8; ++t) tmp[i][t] = t < tc ? to_f(p[i * ld + t]) : 0.f;
    for (int i = 0; i < 8; ++i) out[i] = _mm256_load_ps(tmp[i]);
    transpose8(out);
  }
  template <typename in_t>
  static void store_block(in_t* p, int64 ld, int tc, const vec* in) {
    vec r[8];
    for (int i = 0; i < 8; ++i) r[i] = in[i];
    transpose8(r);
    if constexpr (std::is_same_v<in_t, float>) {
      if (tc == TB) {
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(p + i * ld, r[i]);
        return;
      }
    }
    alignas(32) float tmp[8][8];
    for (int i = 0; i < 8; ++i) _mm256_store_ps(tmp[i], r[i]);
    for (int i = 0; i < 8; ++i)
      for (int t = 0; t < tc; ++t) p[i * ld + t] = from_f<in_t>(tmp[i][t]);
  }
  // dst[t] += sum over lanes of in[t], t < tc.
  static void reduce8_add(const vec* v, float* dst, int tc) {
    vec a01 = _mm256_hadd_ps(v[0], v[1]), a23 = _mm256_hadd_ps(v[2], v[3]);
    vec a45 = _mm256_hadd_ps(v[4], v[5]), a67 = _mm256_hadd_ps(v[6], v[7]);
    vec b0 = _mm256_hadd_ps(a01, a23), b1 = _mm256_hadd_ps(a45, a67);
    vec r = _mm256_add_ps(_mm256_permute2f128_ps(b0, b1, 0x20), _mm256_permute2f128_ps(b0, b1, 0x31));
    if (tc == TB) {
      _mm256_storeu_ps(dst, _mm256_add_ps(_mm256_loadu_ps(dst), r));
    } else {
      alignas(32) float tmp[8];
      _mm256_store_ps(tmp, r);
      for (int t = 0; t < tc; ++t) dst[t] += tmp[t];
    }
  }
};
#endif

// ------------------------------------------------------------------------------------------------
// Parameters
// ------------------------------------------------------------------------------------------------
template <typename T>
struct Params {
  int64 Bsz, D, L, N, G, Dg, K, nck, nthreads = 1;
  const void *u, *delta, *z, *dout;
  void *out, *du, *ddelta, *dz;
  const T *A, *Bm, *Cm, *Dv, *bias;
  bool softplus;
  // N = 1 forward: write out with non-temporal full-line stores (set by scan_fwd when it pays, see there)
  bool stream_out = false;
  T *last_state, *ckpt;
  T *dA, *dD, *dbias, *dBbuf, *dCbuf;  // dA (B, D, N), dD / dbias (B, D), dB/dC buf (threads, B, G, N, L)
};

// Circular distance of two byte offsets mod 4 KiB (the period of the L1 index).
inline int64 offset_gap_4k(int64 x, int64 y) {
  const int64 d = ((x - y) % 4096 + 4096) % 4096;
  return std::min(d, 4096 - d);
}

// Channels per work item of the N = 1 forward (fwd_item_n1; their rows are streamed side by side).
constexpr int kN1Rows = 4;
// How far ahead (elements) the N = 1 forward prefetches its delta / u / z rows in software. The hardware
// prefetchers fall behind on its 4 rows x 2-3 input streams and 4 output streams: on the AVX-512
// development VM, at (1, 384, 64000) G = 4, 11.8-13.0 ms without it, 9.5-9.8 ms with it (alternating
// runs; 256-1024 alike, 2048 slower). Neutral on the AVX2 path, which is compute-bound there.
constexpr int64 kN1Prefetch = 512;
// How far ahead (elements) the generic forward prefetches the gate z's rows in software, once per 16
// steps. With z a 16-channel item streams 4 x 16 rows (u, delta, z in; out), more than the hardware
// prefetchers follow: on the AVX-512 development VM, (1, 768, 4000, 16) with z took 9.9-10.8 ms without
// it and 7.1-8.0 ms with it (4 alternating process pairs, 2026-12-06; no-z case unchanged at 5.6-6.2 ms).
// Prefetching u and delta as well was slower (9.1-11.1 ms), as it was without z (2026-12-06, stop 22).
constexpr int64 kZPrefetch = 64;

// Whether two of `rows` consecutive rows of L elements of sz bytes start within 64 bytes of each other
// mod 4 KiB (then the N = 1 forward, which streams them side by side, thrashes a few L1 sets).
inline bool n1_rows_collide(int64 L, int64 sz, int rows) {
  for (int i = 1; i < rows; ++i)
    if (offset_gap_4k(i * L * sz, 0) < 64) return true;
  return false;
}

inline int64 chunk_len(int64 N) {
  int64 K = (2048 / std::max<int64>(N, 1)) / TB * TB;
  return std::min<int64>(std::max<int64>(K, TB), 1024);
}

// B / C rows for the time block starting at t0: direct pointer when the block is full, else a zero-padded copy.
template <typename T>
inline const T* bc_rows(const T* base, int64 L, int64 N, int64 t0, int tc, T* buf, int64& ld) {
  if (tc == TB) {
    ld = L;
    return base + t0;
  }
  for (int64 n = 0; n < N; ++n)
    for (int t = 0; t < TB; ++t) buf[n * TB + t] = t < tc ? base[n * L + t0 + t] : T(0);
  ld = TB;
  return buf;
}

constexpr int64 kMaxN = 256;

namespace base_isa {
#include "scan_item_kernels.inc"
}  // namespace base_isa

#if defined(MMVSSM_AVX2) && defined(__GNUC__) && defined(__x86_64__)
#define MMVSSM_AVX512 1
// ------------------------------------------------------------------------------------------------
// AVX-512: 16 channels per vector, compiled for AVX-512 here and chosen at run time when the CPU
// has it (the rest of the file targets x86-64-v3). Same formulas as Avx2Ops, lane for lane, except
// exp2 (table-based: more accurate, and faster here; see Avx512Ops::exp2); the 16 x 8 (channel x
// time) tiles are two 8 x 8 AVX2 transposes joined into one 512-bit vector.
// ------------------------------------------------------------------------------------------------
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl")
namespace avx512_isa {
#include "lane_ops_common.inc"

struct Avx512Ops : LaneOpsCommon<Avx512Ops, __m512, 16> {
  using T = float;
  using vec = __m512;
  static constexpr int W = 16;
  static vec zero() { return _mm512_setzero_ps(); }
  static vec set1(float x) { return _mm512_set1_ps(x); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static vec sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
  static vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  static vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  static vec max(vec a, vec b) { return _mm512_max_ps(a, b); }
  static vec min(vec a, vec b) { return _mm512_min_ps(a, b); }
  static vec abs(vec x) { return _mm512_abs_ps(x); }
  // 2^x = 2^k 2^(i/16) 2^f: adding 1.5 * 2^19 (ulp 1/16) rounds x to the nearest multiple of 1/16, m / 16 =
  // k + i / 16 (i in 0..15: the sum's low 4 bits, which vpermps reads; k = floor(m / 16)), f = x - m / 16 in
  // [-1/32, 1/32]; 2^(i/16) from a 16-entry table, 2^f = 1 + f q(f) with q a degree-2 relative minimax fit
  // (error 1.6e-9), 2^k by vscalefps (which scales by 2^floor(m / 16)). Max relative error 1.1e-7 on
  // [-126, 127] with fp32 rounding, against 1.9e-7 for Avx2Ops's degree-5 polynomial on [-1/2, 1/2], and 4
  // fma / mul instead of 6: the Vim-S forward (N = 16) 4-8% faster on Zen 4. (With AVX2 the lookup takes two
  // permutes and a blend, and the 2^k scaling three integer ops more: slower there, so Avx2Ops keeps its
  // polynomial.) The first table entry is 1 and p(0) = 1 exactly, so decays close to 1 carry no bias that
  // would compound over long sequences. Clamped below at -126 like Avx2Ops (x the max's second operand, so
  // NaN stays NaN, and vscalefps keeps it); above 128 the result is inf (as expf's), so no upper clamp.
  // exp2_nonpos is the same.
  static vec exp2(vec x) {
    alignas(64) static constexpr float kTab[16] = {  // 2^(i/16), rounded to fp32
        1.000000000e+00f, 1.044273734e+00f, 1.090507746e+00f, 1.138788581e+00f, 1.189207077e+00f, 1.241857767e+00f,
        1.296839595e+00f, 1.354255557e+00f, 1.414213538e+00f, 1.476826191e+00f, 1.542210817e+00f, 1.610490322e+00f,
        1.681792855e+00f, 1.756252170e+00f, 1.834008098e+00f, 1.915206552e+00f};
    x = _mm512_max_ps(_mm512_set1_ps(-126.f), x);
    const vec magic = _mm512_set1_ps(786432.f);
    const vec j = _mm512_add_ps(x, magic);
    const vec m16 = _mm512_sub_ps(j, magic);
    const vec f = _mm512_sub_ps(x, m16);
    const vec t = _mm512_permutexvar_ps(_mm512_castps_si512(j), _mm512_load_ps(kTab));
    const vec q = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_set1_ps(5.550213531e-02f), f, _mm512_set1_ps(2.402342856e-01f)), f,
                                  _mm512_set1_ps(6.931471825e-01f));
    return _mm512_scalef_ps(_mm512_fmadd_ps(_mm512_mul_ps(t, f), q, t), m16);
  }
  static vec exp2_nonpos(vec x) { return exp2(x); }
  // 1 / x for finite x >= 1, as Avx2Ops::rcp.
  static vec rcp(vec x) {
    const vec r = _mm512_rcp14_ps(x);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(x, r, _mm512_set1_ps(1.f)), r);
  }
  static vec load_lanes(const float* p) { return _mm512_loadu_ps(p); }
  static void store_lanes(float* p, vec v) { _mm512_storeu_ps(p, v); }
  static void stream_row(float* p, vec v) { _mm512_stream_ps(p, v); }  // p 64-byte aligned
  // One Hillis-Steele level of the N = 1 recurrence over the 16 lanes (time steps) of a row: the step pair
  // (a_j, b_j) absorbs the one S lanes earlier, b_j += a_j b_{j-S}, a_j *= a_{j-S}; lanes j < S take the
  // identity (a = 1, b = 0). After levels 1, 2, 4, (a_j, b_j) maps the state before lane max(j - 7, 0) to
  // the one after lane j: products of decays only, like the sequential loop.
  template <int S>
  static void scan_level(vec& a, vec& b) {
    const __m512i sb = _mm512_alignr_epi32(_mm512_castps_si512(b), _mm512_setzero_si512(), 16 - S);
    const __m512i sa = _mm512_alignr_epi32(_mm512_castps_si512(a), _mm512_castps_si512(_mm512_set1_ps(1.f)), 16 - S);
    b = _mm512_fmadd_ps(a, _mm512_castsi512_ps(sb), b);
    a = _mm512_mul_ps(a, _mm512_castsi512_ps(sa));
  }
  // States h_0..h_15 of one row (16 time steps of one channel) from the state hb before them (in every
  // lane); hb becomes h_15 in every lane. After levels 1, 2, 4, h = a hb + b is exact in lanes 0..7; lanes
  // 8..15 take, instead of hb, that h from 8 lanes earlier: one fma and one permute where a fourth level
  // took two of each (in cache on one thread 3% faster, Zen 4). The rows' dependency chain is two fmas
  // and two permutes per block.
  static vec scan_row(vec a, vec b, vec& hb) {
    scan_level<1>(a, b);
    scan_level<2>(a, b);
    scan_level<4>(a, b);
    const vec lo = _mm512_fmadd_ps(a, hb, b);
    const __m512i back8 = _mm512_set_epi32(7, 6, 5, 4, 3, 2, 1, 0, 7, 6, 5, 4, 3, 2, 1, 0);
    const vec h = _mm512_fmadd_ps(a, _mm512_mask_permutexvar_ps(hb, 0xFF00, back8, lo), b);
    hb = _mm512_permutexvar_ps(_mm512_set1_epi32(15), h);
    return h;
  }
  static float first_lane(vec v) { return _mm512_cvtss_f32(v); }
  static vec join(__m256 lo, __m256 hi) { return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1); }
  static vec join(const __m256* parts) { return join(parts[0], parts[1]); }
  static __m256 part(vec v, int q) { return q == 0 ? _mm512_castps512_ps256(v) : _mm512_extractf32x8_ps(v, 1); }
  template <typename in_t>
  static void load_block(const in_t* p, int64 ld, int tc, vec* out) {
    __m256 lo[TB], hi[TB];
    Avx2Ops::load_block(p, ld, tc, lo);
    Avx2Ops::load_block(p + 8 * ld, ld, tc, hi);
    for (int t = 0; t < TB; ++t) out[t] = join(lo[t], hi[t]);
  }
  template <typename in_t>
  static void store_block(in_t* p, int64 ld, int tc, const vec* in) {
    __m256 lo[TB], hi[TB];
    for (int t = 0; t < TB; ++t) {
      lo[t] = _mm512_castps512_ps256(in[t]);
      hi[t] = _mm512_extractf32x8_ps(in[t], 1);
    }
    Avx2Ops::store_block(p, ld, tc, lo);
    Avx2Ops::store_block(p + 8 * ld, ld, tc, hi);
  }
  static void reduce8_add(const vec* v, float* dst, int tc) {
    __m256 s[TB];
    for (int t = 0; t < TB; ++t) s[t] = _mm256_add_ps(_mm512_castps512_ps256(v[t]), _mm512_extractf32x8_ps(v[t], 1));
    Avx2Ops::reduce8_add(s, dst, tc);
  }
};

#include "scan_item_kernels.inc"

// One time tile of a 16-channel item; hs: its N x 16 state (fp32), updated.
template <typename in_t>
void fwd_tile16(const Params<float>& p, int64 b, int64 d0, int64 ts, int64 te, float* hs) {
  __m512 h[kMaxN];
  for (int64 n = 0; n < p.N; ++n) h[n] = _mm512_loadu_ps(hs + n * 16);
  fwd_item<Avx512Ops, in_t>(p, b, d0, ts, te, h);
  for (int64 n = 0; n < p.N; ++n) _mm512_storeu_ps(hs + n * 16, h[n]);
}

template <typename in_t>
void bwd_item16(const Params<float>& p, int64 b, int64 d0, int tid) {
  bwd_item<Avx512Ops, in_t>(p, b, d0, tid);
}

}  // namespace avx512_isa
#pragma GCC pop_options

// Whether the CPU runs the AVX-512 kernels (MMVSSM_NO_AVX512 set to anything but "" or "0" turns them off,
// for comparisons).
bool use_avx512() {
  static const bool ok = [] {
    const char* off = std::getenv("MMVSSM_NO_AVX512");
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           (off == nullptr || off[0] == '\0' || std::strcmp(off, "0") == 0);
  }();
  return ok;
}
#else
bool use_avx512() { return false; }
#endif


// ------------------------------------------------------------------------------------------------
// Work items and dispatch
// ------------------------------------------------------------------------------------------------
struct Item {
  int64 b, d0;
  int w;
};

// Work items: runs of each of the vector widths in turn (widest first) of one group's channels, then single
// channels for the rest of the group. No widths: single channels only.
std::vector<Item> make_items(int64 Bsz, int64 D, int64 G, std::initializer_list<int> widths) {
  std::vector<Item> items;
  const int64 Dg = D / G;
  for (int64 b = 0; b < Bsz; ++b)
    for (int64 g = 0; g < G; ++g) {
      int64 d = g * Dg;
      const int64 end = d + Dg;
      for (const int w : widths)
        for (; d + w <= end; d += w) items.push_back({b, d, w});
      for (; d < end; ++d) items.push_back({b, d, 1});
    }
  return items;
}

// Vector widths of the work items: N = 1 forward kN1Rows channels (fwd_item_n1), else 16 (AVX-512) then 8.
template <typename T>
std::vector<Item> scan_items(const Params<T>& p, bool n1_fwd) {
#ifdef MMVSSM_AVX2
  if constexpr (std::is_same_v<T, float>) {
    if (n1_fwd) return make_items(p.Bsz, p.D, p.G, {kN1Rows});
    if (use_avx512()) return make_items(p.Bsz, p.D, p.G, {16, 8});
    return make_items(p.Bsz, p.D, p.G, {8});
  }
#endif
  return make_items(p.Bsz, p.D, p.G, {});
}

// Forward over a thread's range of work items in time tiles of kTile steps: all items advance one
// tile before the next, so the tile's B / C rows (shared by the channels of a group) stay in cache
// and each item's u / delta / z / out rows are read as short sequential runs, instead of every item
// streaming its 4 x W rows plus 2 x N rows of B / C over the whole sequence (too many concurrent
// streams for the hardware prefetchers at L ~ 4k-64k).
constexpr int64 kTile = 512;

template <typename in_t, typename T>
void run_fwd(const Params<T>& p) {
  const auto items = scan_items(p, p.N == 1);
  at::parallel_for(0, static_cast<int64>(items.size()), 1, [&](int64 begin, int64 end) {
#ifdef MMVSSM_AVX2
    if constexpr (std::is_same_v<T, float>) {
      if (p.N == 1) {  // one pass, no time tiles
        for (int64 i = begin; i < end; ++i) {
          const Item& it = items[i];
          if (it.w == kN1Rows) {
#ifdef MMVSSM_AVX512
            if (use_avx512()) {
              avx512_isa::fwd_item_n1<avx512_isa::Avx512Ops, in_t>(p, it.b, it.d0);
              continue;
            }
#endif
            base_isa::fwd_item_n1<Avx2Ops, in_t>(p, it.b, it.d0);
          } else {
            T h = T(0);
            base_isa::fwd_item<ScalarOps<T>, in_t>(p, it.b, it.d0, 0, p.L, &h);
          }
        }
        return;
      }
    }
#endif
    // state of every item of the range: N vectors of up to 16 lanes
    std::vector<T> state(static_cast<size_t>(end - begin) * p.N * 16, T(0));
    for (int64 ts = 0; ts < p.L; ts += kTile) {
      const int64 te = std::min(p.L, ts + kTile);
      for (int64 i = begin; i < end; ++i) {
        const Item& it = items[i];
        T* hs = state.data() + (i - begin) * p.N * 16;
#ifdef MMVSSM_AVX512
        if constexpr (std::is_same_v<T, float>) {
          if (it.w == 16) {
            avx512_isa::fwd_tile16<in_t>(p, it.b, it.d0, ts, te, hs);
            continue;
          }
        }
#endif
#ifdef MMVSSM_AVX2
        if constexpr (std::is_same_v<T, float>) {
          if (it.w == 8) {
            __m256 h[kMaxN];
            for (int64 n = 0; n < p.N; ++n) h[n] = _mm256_loadu_ps(hs + n * 8);
            base_isa::fwd_item<Avx2Ops, in_t>(p, it.b, it.d0, ts, te, h);
            for (int64 n = 0; n < p.N; ++n) _mm256_storeu_ps(hs + n * 8, h[n]);
            continue;
          }
        }
#endif
        base_isa::fwd_item<ScalarOps<T>, in_t>(p, it.b, it.d0, ts, te, hs);
      }
    }
  });
}

template <typename in_t, typename T>
void run_bwd(const Params<T>& p) {
  const auto items = scan_items(p, false);
  at::parallel_for(0, static_cast<int64>(items.size()), 1, [&](int64 begin, int64 end) {
    // one dB / dC buffer per thread; a nested (inline) call runs on one thread
    const int tid = std::min<int>(std::max<int>(at::get_thread_num(), 0), static_cast<int>(p.nthreads) - 1);
    for (int64 i = begin; i < end; ++i) {
      const Item& it = items[i];
#ifdef MMVSSM_AVX512
      if constexpr (std::is_same_v<T, float>) {
        if (it.w == 16) {
          avx512_isa::bwd_item16<in_t>(p, it.b, it.d0, tid);
          continue;
        }
      }
#endif
#ifdef MMVSSM_AVX2
      if constexpr (std::is_same_v<T, float>) {
        if (it.w == 8) {
          base_isa::bwd_item<Avx2Ops, in_t>(p, it.b, it.d0, tid);
          continue;
        }
      }
#endif
      base_isa::bwd_item<ScalarOps<T>, in_t>(p, it.b, it.d0, tid);
    }
  });
}

at::ScalarType compute_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                  const at::Tensor& C, const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                  const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(u.device().is_cpu(), "mmvssm._C: tensors must be on the CPU");
  TORCH_CHECK(u.dim() == 3 && u.is_contiguous(), "mmvssm._C: u must be a contiguous (B, D, L) tensor");
  TORCH_CHECK(delta.sizes() == u.sizes() && delta.is_contiguous() && delta.scalar_type() == u.scalar_type(),
              "mmvssm._C: delta must match u (shape, dtype, contiguous)");
  const auto ct = compute_type(u.scalar_type());
  const int64 Dd = u.size(1), L = u.size(2);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == Dd && A.is_contiguous() && A.scalar_type() == ct,
              "mmvssm._C: A must be a contiguous (D, N) tensor of the compute dtype");
  const int64 N = A.size(1);
  TORCH_CHECK(N >= 1 && N <= 256, "mmvssm._C: state dimension N must be in [1, 256]");
  for (const auto* t : {&B, &C}) {
    TORCH_CHECK(t->dim() == 4 && t->size(0) == u.size(0) && t->size(2) == N && t->size(3) == L &&
                    t->is_contiguous() && t->scalar_type() == ct,
                "mmvssm._C: B and C must be contiguous (B, G, N, L) tensors of the compute dtype");
  }
  TORCH_CHECK(B.size(1) == C.size(1) && B.size(1) >= 1 && Dd % B.size(1) == 0, "mmvssm._C: D must be divisible by G");
  for (const auto* t : {&D, &bias})
    if (t->has_value())
      TORCH_CHECK((*t)->dim() == 1 && (*t)->size(0) == Dd && (*t)->is_contiguous() && (*t)->scalar_type() == ct,
                  "mmvssm._C: D and delta_bias must be contiguous (D,) tensors of the compute dtype");
  if (z.has_value())
    TORCH_CHECK(z->sizes() == u.sizes() && z->is_contiguous() && z->scalar_type() == u.scalar_type(),
                "mmvssm._C: z must match u (shape, dtype, contiguous)");
}

template <typename T>
Params<T> make_params(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                      const at::Tensor& C, const c10::optional<at::Tensor>& D, const c10::optional<at::Tensor>& z,
                      const c10::optional<at::Tensor>& bias, bool softplus) {
  Params<T> p{};
  p.Bsz = u.size(0);
  p.D = u.size(1);
  p.L = u.size(2);
  p.N = A.size(1);
  p.G = B.size(1);
  p.Dg = p.D / p.G;
  p.K = chunk_len(p.N);
  p.nck = std::max<int64>(1, (p.L + p.K - 1) / p.K);
  p.u = u.data_ptr();
  p.delta = delta.data_ptr();
  p.z = z.has_value() ? z->data_ptr() : nullptr;
  p.A = A.data_ptr<T>();
  p.Bm = B.data_ptr<T>();
  p.Cm = C.data_ptr<T>();
  p.Dv = D.has_value() ? D->data_ptr<T>() : nullptr;
  p.bias = bias.has_value() ? bias->data_ptr<T>() : nullptr;
  p.softplus = softplus;
  return p;
}

#define MMVSSM_DISPATCH_IN(TYPE, NAME, ...)                                                   \
  switch (TYPE) {                                                                            \
    case at::kFloat: { using in_t = float; using T = float; __VA_ARGS__; break; }            \
    case at::kDouble: { using in_t = double; using T = double; __VA_ARGS__; break; }         \
    case at::kBFloat16: { using in_t = c10::BFloat16; using T = float; __VA_ARGS__; break; } \
    case at::kHalf: { using in_t = c10::Half; using T = float; __VA_ARGS__; break; }         \
    default: TORCH_CHECK(false, NAME ": unsupported dtype ", TYPE);                          \
  }

// Outputs at least this large are written with non-temporal stores by the N = 1 forward.
constexpr size_t kStreamBytes = size_t(32) << 20;

// Large outputs (u-sized, e.g. 98 MB for the VMamba stage-1 scan) come from fresh mmap'ed pages: with
// 4 KiB pages, faulting them in costs more than the scan itself (~24k faults). Allocate them 2 MiB
// aligned and ask for transparent huge pages (THP "madvise" mode), ~50 faults instead. Tried and reverted
// (fccb71c): an ordinary allocation advised on its 2 MiB-aligned interior. Where freed memory is kept
// (mmvssm.utils.malloc) a loop of VMamba-shape forwards then held 2-4 outputs resident (188-376 MB over the
// inputs, against 95), though 30 forward+backward calls grew the heap less (468-843 vs 673-1342 MB).
at::Tensor empty_large_like(const at::Tensor& like) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t nbytes = static_cast<size_t>(like.numel()) * like.element_size();
  if (nbytes > 16 * kHuge) {  // smaller blocks are recycled by malloc (its mmap threshold tops out at 32 MiB)
    const size_t len = (nbytes + kHuge - 1) / kHuge * kHuge;
    void* ptr = nullptr;
    if (posix_memalign(&ptr, kHuge, len) == 0) {
      madvise(ptr, len, MADV_HUGEPAGE);
      // a resizable storage (resize_ reallocates through the CPU allocator), unlike from_blob's
      c10::Storage st(c10::Storage::use_byte_size_t(), nbytes,
                      c10::DataPtr(ptr, ptr, [](void* q) { std::free(q); }, c10::Device(c10::kCPU)),
                      c10::GetCPUAllocator(), /*resizable=*/true);
      return at::empty({0}, like.options()).set_(st, 0, like.sizes(), {});
    }
  }
#endif
  return at::empty_like(like);
}

}  // namespace

// Returns (out, last_state or empty, checkpoints or empty). Checkpoints: (B, nck, N, D), the state
// at the start of every K-step chunk, needed by scan_bwd.
std::vector<at::Tensor> scan_fwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C, const c10::optional<at::Tensor>& D,
                                 const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& bias,
                                 bool softplus, bool want_last_state, bool save_ckpt) {
  check_inputs(u, delta, A, B, C, D, z, bias);
  const auto ct = compute_type(u.scalar_type());
  auto fopt = u.options().dtype(ct);
  at::Tensor out = empty_large_like(u);
  at::Tensor last, ckpt;
  MMVSSM_DISPATCH_IN(u.scalar_type(), "scan_fwd", {
    Params<T> p = make_params<T>(u, delta, A, B, C, D, z, bias, softplus);
    p.out = out.data_ptr();
    // An N = 1 output this large is evicted before anyone reads it: plain stores would first read every
    // line in (a third more memory traffic for a scan that is close to memory-bound). Full 64-byte lines
    // need 64-byte aligned rows: L % 16 == 0 (the huge-page output is 2 MiB aligned).
    p.stream_out = std::is_same_v<in_t, float> && p.N == 1 && p.L % 16 == 0 &&
                   out.nbytes() >= kStreamBytes && reinterpret_cast<uintptr_t>(p.out) % 64 == 0;
    if (want_last_state) {
      last = at::empty({p.Bsz, p.D, p.N}, fopt);
      p.last_state = last.data_ptr<T>();
    }
    if (save_ckpt) {
      ckpt = at::empty({p.Bsz, p.nck, p.N, p.D}, fopt);
      p.ckpt = ckpt.data_ptr<T>();
    }
    if (p.L > 0) run_fwd<in_t, T>(p);
    else if (want_last_state) last.zero_();
  });
  return {out, last, ckpt};
}

// Returns (du, ddelta, dA, dB, dC, dD, dz, dbias); dD / dz / dbias undefined when not given.
// dA, dD, dbias are summed over the batch; dB, dC have B's (B, G, N, L) shape, compute dtype.
std::vector<at::Tensor> scan_bwd(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C, const c10::optional<at::Tensor>& D,
                                 const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& bias,
                                 const at::Tensor& dout, const at::Tensor& ckpt, bool softplus) {
  check_inputs(u, delta, A, B, C, D, z, bias);
  TORCH_CHECK(dout.sizes() == u.sizes() && dout.is_contiguous() && dout.scalar_type() == u.scalar_type(),
              "mmvssm._C: dout must match u (shape, dtype, contiguous)");
  const auto ct = compute_type(u.scalar_type());
  auto fopt = u.options().dtype(ct);
  at::Tensor du = empty_large_like(u), ddelta = empty_large_like(u);
  at::Tensor dz = z.has_value() ? empty_large_like(u) : at::Tensor();
  at::Tensor dA, dB, dC, dD, dbias;
  const int64 nthreads = at::get_num_threads();
  MMVSSM_DISPATCH_IN(u.scalar_type(), "scan_bwd", {
    Params<T> p = make_params<T>(u, delta, A, B, C, D, z, bias, softplus);
    TORCH_CHECK(ckpt.defined() && ckpt.is_contiguous() && ckpt.scalar_type() == ct &&
                    ckpt.sizes() == at::IntArrayRef({p.Bsz, p.nck, p.N, p.D}),
                "mmvssm._C: checkpoint tensor does not match the inputs");
    p.dout = dout.data_ptr();
    p.du = du.data_ptr();
    p.ddelta = ddelta.data_ptr();
    p.dz = z.has_value() ? dz.data_ptr() : nullptr;
    p.ckpt = const_cast<T*>(ckpt.data_ptr<T>());
    at::Tensor dA_b = at::zeros({p.Bsz, p.D, p.N}, fopt);
    at::Tensor dD_b = D.has_value() ? at::zeros({p.Bsz, p.D}, fopt) : at::Tensor();
    at::Tensor db_b = bias.has_value() ? at::zeros({p.Bsz, p.D}, fopt) : at::Tensor();
    at::Tensor dBbuf = at::zeros({nthreads, p.Bsz, p.G, p.N, p.L}, fopt);
    at::Tensor dCbuf = at::zeros({nthreads, p.Bsz, p.G, p.N, p.L}, fopt);
    p.dA = dA_b.data_ptr<T>();
    p.dD = D.has_value() ? dD_b.data_ptr<T>() : nullptr;
    p.dbias = bias.has_value() ? db_b.data_ptr<T>() : nullptr;
    p.dBbuf = dBbuf.data_ptr<T>();
    p.nthreads = nthreads;
    p.dCbuf = dCbuf.data_ptr<T>();
    if (p.L > 0) run_bwd<in_t, T>(p);
    dA = dA_b.sum(0);
    if (D.has_value()) dD = dD_b.sum(0);
    if (bias.has_value()) dbias = db_b.sum(0);
    dB = nthreads == 1 ? dBbuf[0] : dBbuf.sum(0);
    dC = nthreads == 1 ? dCbuf[0] : dCbuf.sum(0);
  });
  return {du, ddelta, dA, dB, dC, dD, dz, dbias};
}

bool has_avx2() {
#ifdef MMVSSM_AVX2
  return true;
#else
  return false;
#endif
}

at::Tensor causal_conv1d_silu_fwd(const at::Tensor& x, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias);  // causal_conv1d.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmvssm fused CPU selective scan";
  m.def("scan_fwd", &scan_fwd, "selective scan forward (CPU)", py::arg("u"), py::arg("delta"), py::arg("A"),
        py::arg("B"), py::arg("C"), py::arg("D"), py::arg("z"), py::arg("delta_bias"), py::arg("delta_softplus"),
        py::arg("want_last_state"), py::arg("save_ckpt"), py::call_guard<py::gil_scoped_release>());
  m.def("scan_bwd", &scan_bwd, "selective scan backward (CPU)", py::arg("u"), py::arg("delta"), py::arg("A"),
        py::arg("B"), py::arg("C"), py::arg("D"), py::arg("z"), py::arg("delta_bias"), py::arg("dout"),
        py::arg("ckpt"), py::arg("delta_softplus"), py::call_guard<py::gil_scoped_release>());
  m.def("causal_conv1d_silu_fwd", &causal_conv1d_silu_fwd, "silu(causal depthwise conv1d) forward (CPU, fp32)",
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::call_guard<py::gil_scoped_release>());
  m.def("uses_avx512", &use_avx512, "whether the AVX-512 kernels run on this CPU (MMVSSM_NO_AVX512 unset)");
  m.def("has_avx2", &has_avx2, "whether the kernel was compiled with AVX2 + FMA");
  m.def("chunk_len", &chunk_len, "checkpoint chunk length for a state size N");
}
