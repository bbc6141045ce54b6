// CPU implementation of the batched bipartite merge and the span union (OpenMP).
//
// Exactness notes (the reference is pystream/merge_reference.py):
// * every score a_i . b_j is computed by the same instruction sequence whatever (i, j) is, so
//   equal inputs give bitwise-equal scores and ties are then broken by index exactly as torch
//   does (max: first maximal j; stable descending sort: smallest i first);
// * the size-weighted sums run over the merged A tokens in rank order, as index_add_ does.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace pystream {
namespace {

constexpr float kNormEps = 1e-12f;

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct Scratch {
  std::vector<float> nrm;  // normalised metric: nA_pad rows of A then nB_pad rows of B
  std::vector<float> best;
  std::vector<int32_t> best_j, order, unm_list, csr_start, csr_list;
  std::vector<uint8_t> merged;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

std::vector<float>& acc_buffer(int64_t C) {
  thread_local std::vector<float> acc;
  if ((int64_t)acc.size() < C) acc.resize(C);
  return acc;
}

// Sum of v*0 over the row: 0 when every value is finite, NaN otherwise.
template <typename TM>
inline float finite_check(const TM* src, int64_t count) {
  float chk = 0.f;
#pragma omp simd reduction(+ : chk)
  for (int64_t k = 0; k < count; ++k) chk += to_f32(src[k]) * 0.0f;
  return chk;
}

// dst[k] = src[k] / max(||src||, eps) in fp32, zero padded to Kp. Returns the finite check.
template <typename TM>
inline float normalise_row(const TM* __restrict src, float* __restrict dst, int64_t Cm,
                           int64_t Kp) {
  float ss = 0.f, chk = 0.f;
#pragma omp simd reduction(+ : ss, chk)
  for (int64_t k = 0; k < Cm; ++k) {
    float v = to_f32(src[k]);
    ss += v * v;
    chk += v * 0.0f;
  }
  const float d = std::max(std::sqrt(ss), kNormEps);
#pragma omp simd
  for (int64_t k = 0; k < Cm; ++k) dst[k] = to_f32(src[k]) / d;
  for (int64_t k = Cm; k < Kp; ++k) dst[k] = 0.f;
  return chk;
}

// Scores of four A rows (a, row stride Kp) against four consecutive B rows: out[4][4].
// One instruction sequence for all sixteen dot products (see the note at the top). 4x4 tiles
// keep the L2 traffic per multiply-add low (B rows stream, the A tile stays in L1).
#if defined(__AVX512F__)
// Kp is a multiple of 16. 16 accumulators + 8 operands stay in the 32 zmm registers; every
// product is reduced by the same _mm512_reduce_add_ps sequence.
inline void dot4x4(const float* __restrict a, const float* __restrict b, int64_t Kp,
                   float* __restrict out) {
  __m512 c[16];
  for (int q = 0; q < 16; ++q) c[q] = _mm512_setzero_ps();
  for (int64_t k = 0; k < Kp; k += 16) {
    const __m512 x0 = _mm512_loadu_ps(a + k), x1 = _mm512_loadu_ps(a + Kp + k);
    const __m512 x2 = _mm512_loadu_ps(a + 2 * Kp + k), x3 = _mm512_loadu_ps(a + 3 * Kp + k);
    const __m512 y0 = _mm512_loadu_ps(b + k), y1 = _mm512_loadu_ps(b + Kp + k);
    const __m512 y2 = _mm512_loadu_ps(b + 2 * Kp + k), y3 = _mm512_loadu_ps(b + 3 * Kp + k);
    c[0] = _mm512_fmadd_ps(x0, y0, c[0]);
    c[1] = _mm512_fmadd_ps(x0, y1, c[1]);
    c[2] = _mm512_fmadd_ps(x0, y2, c[2]);
    c[3] = _mm512_fmadd_ps(x0, y3, c[3]);
    c[4] = _mm512_fmadd_ps(x1, y0, c[4]);
    c[5] = _mm512_fmadd_ps(x1, y1, c[5]);
    c[6] = _mm512_fmadd_ps(x1, y2, c[6]);
    c[7] = _mm512_fmadd_ps(x1, y3, c[7]);
    c[8] = _mm512_fmadd_ps(x2, y0, c[8]);
    c[9] = _mm512_fmadd_ps(x2, y1, c[9]);
    c[10] = _mm512_fmadd_ps(x2, y2, c[10]);
    c[11] = _mm512_fmadd_ps(x2, y3, c[11]);
    c[12] = _mm512_fmadd_ps(x3, y0, c[12]);
    c[13] = _mm512_fmadd_ps(x3, y1, c[13]);
    c[14] = _mm512_fmadd_ps(x3, y2, c[14]);
    c[15] = _mm512_fmadd_ps(x3, y3, c[15]);
  }
  for (int q = 0; q < 16; ++q) out[q] = _mm512_reduce_add_ps(c[q]);
}
#else
inline void dot4x4(const float* __restrict a, const float* __restrict b, int64_t Kp,
                   float* __restrict out) {
  const float* __restrict a0 = a;
  const float* __restrict a1 = a + Kp;
  const float* __restrict a2 = a + 2 * Kp;
  const float* __restrict a3 = a + 3 * Kp;
  const float* __restrict b0 = b;
  const float* __restrict b1 = b + Kp;
  const float* __restrict b2 = b + 2 * Kp;
  const float* __restrict b3 = b + 3 * Kp;
  float s00 = 0.f, s01 = 0.f, s02 = 0.f, s03 = 0.f, s10 = 0.f, s11 = 0.f, s12 = 0.f, s13 = 0.f;
  float s20 = 0.f, s21 = 0.f, s22 = 0.f, s23 = 0.f, s30 = 0.f, s31 = 0.f, s32 = 0.f, s33 = 0.f;
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, \
                               s30, s31, s32, s33)
  for (int64_t k = 0; k < Kp; ++k) {
    const float x0 = a0[k], x1 = a1[k], x2 = a2[k], x3 = a3[k];
    const float y0 = b0[k], y1 = b1[k], y2 = b2[k], y3 = b3[k];
    s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
    s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
    s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3;
    s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3;
  }
  out[0] = s00; out[1] = s01; out[2] = s02; out[3] = s03;
  out[4] = s10; out[5] = s11; out[6] = s12; out[7] = s13;
  out[8] = s20; out[9] = s21; out[10] = s22; out[11] = s23;
  out[12] = s30; out[13] = s31; out[14] = s32; out[15] = s33;
}
#endif

template <typename TX>
inline void copy_row(TX* dst, const TX* src, int64_t C) {
  std::memcpy(dst, src, sizeof(TX) * C);
}

// Work (multiply-adds of the score matrix) above which one row is split across threads.
constexpr double kInnerParallelWork = 1.0e6;

template <typename TX, typename TM>
void merge_row(const MergeArgs& a, int64_t b, bool inner, std::atomic<int>& bad_metric) {
  const int64_t N = a.N, C = a.C, Cm = a.Cm, M = a.M, P = a.P;
  const TX* x = static_cast<const TX*>(a.x) + b * N * C;
  const float* s = a.sizes + b * N;
  const TM* m = static_cast<const TM*>(a.metric) + b * N * Cm;
  TX* xo = static_cast<TX*>(a.x_out) + b * M * C;
  float* so = a.sizes_out + b * M;
  int64_t* im = a.index_map + b * N;
  const int64_t n = a.lengths ? a.lengths[b] : N;
  const int64_t rb = a.r[b];
  const int64_t nA = (n - P + 1) / 2, nB = (n - P) / 2;
  const int64_t n_out = n - rb;
  a.lengths_out[b] = n_out;

  float chk = finite_check(m + n * Cm, (N - n) * Cm);  // padding rows are checked too
  for (int64_t t = n; t < N; ++t) im[t] = -1;
  if (M > n_out) {
    std::memset(static_cast<void*>(xo + n_out * C), 0, sizeof(TX) * (M - n_out) * C);
    std::memset(so + n_out, 0, sizeof(float) * (M - n_out));
  }

  if (rb == 0 || nB == 0) {  // no merge: protected, then A, then B
    chk += finite_check(m, n * Cm);
    for (int64_t k = 0; k < P; ++k) {
      copy_row(xo + k * C, x + k * C, C);
      so[k] = s[k];
      im[k] = k;
    }
    for (int64_t i = 0; i < nA; ++i) {
      const int64_t src = P + 2 * i, dst = P + i;
      copy_row(xo + dst * C, x + src * C, C);
      so[dst] = s[src];
      im[src] = dst;
    }
    for (int64_t j = 0; j < nB; ++j) {
      const int64_t src = P + 1 + 2 * j, dst = P + nA + j;
      copy_row(xo + dst * C, x + src * C, C);
      so[dst] = s[src];
      im[src] = dst;
    }
    if (!(chk == 0.f)) bad_metric.store(1, std::memory_order_relaxed);
    return;
  }
  chk += finite_check(m, P * Cm);

  Scratch& S = scratch();
  const int64_t Kp = round_up(Cm, 16), nAp = round_up(nA, 4), nBp = round_up(nB, 4);
  if ((int64_t)S.nrm.size() < (nAp + nBp) * Kp) S.nrm.resize((nAp + nBp) * Kp);
  S.best.resize(nAp);
  S.best_j.resize(nAp);
  float* NA = S.nrm.data();
  float* NB = NA + nAp * Kp;
  float* best = S.best.data();
  int32_t* best_j = S.best_j.data();

  // 1. normalise the metric of A and B rows once (fp32), zero padding rows.
  const int64_t rows = nAp + nBp;
#pragma omp parallel for if (inner) reduction(+ : chk) schedule(static)
  for (int64_t t = 0; t < rows; ++t) {
    float* dst = NA + t * Kp;  // NB == NA + nAp * Kp, so rows are contiguous
    if (t < nA) {
      chk += normalise_row(m + (P + 2 * t) * Cm, dst, Cm, Kp);
    } else if (t >= nAp && t - nAp < nB) {
      chk += normalise_row(m + (P + 1 + 2 * (t - nAp)) * Cm, dst, Cm, Kp);
    } else {
      std::memset(dst, 0, sizeof(float) * Kp);
    }
  }
  if (!(chk == 0.f)) {
    bad_metric.store(1, std::memory_order_relaxed);
    return;
  }

  // 2. best B for each A (first maximal j), four A rows at a time.
  const int64_t quads = nAp / 4;
#pragma omp parallel for if (inner) schedule(static)
  for (int64_t iq = 0; iq < quads; ++iq) {
    const int64_t i0 = 4 * iq;
    float bv[4], out[16];
    int32_t bj[4] = {0, 0, 0, 0};
    for (int q = 0; q < 4; ++q) bv[q] = -std::numeric_limits<float>::infinity();
    for (int64_t j0 = 0; j0 < nBp; j0 += 4) {
      dot4x4(NA + i0 * Kp, NB + j0 * Kp, Kp, out);
      const int64_t lim = std::min<int64_t>(4, nB - j0);
      for (int q = 0; q < 4; ++q)
        for (int64_t u = 0; u < lim; ++u)
          if (out[4 * q + u] > bv[q]) {
            bv[q] = out[4 * q + u];
            bj[q] = (int32_t)(j0 + u);
          }
    }
    for (int q = 0; q < 4; ++q) {
      best[i0 + q] = bv[q];
      best_j[i0 + q] = bj[q];
    }
  }

  // 3. rank A tokens by best score, descending, ties by index; the first rb merge.
  S.order.resize(nA);
  int32_t* order = S.order.data();
  std::iota(order, order + nA, 0);
  std::stable_sort(order, order + nA, [best](int32_t p, int32_t q) { return best[p] > best[q]; });
  S.merged.assign(nA, 0);
  for (int64_t t = 0; t < rb; ++t) S.merged[order[t]] = 1;
  const int64_t n_unm = nA - rb;
  S.unm_list.resize(n_unm);
  for (int64_t i = 0, c = 0; i < nA; ++i)
    if (!S.merged[i]) S.unm_list[c++] = (int32_t)i;
  // merged A tokens grouped by destination, in rank order (CSR)
  S.csr_start.assign(nB + 1, 0);
  S.csr_list.resize(rb);
  for (int64_t t = 0; t < rb; ++t) S.csr_start[best_j[order[t]] + 1]++;
  for (int64_t j = 0; j < nB; ++j) S.csr_start[j + 1] += S.csr_start[j];
  {
    std::vector<int32_t> pos(S.csr_start.begin(), S.csr_start.end() - 1);
    for (int64_t t = 0; t < rb; ++t) {
      const int32_t i = order[t];
      S.csr_list[pos[best_j[i]]++] = i;
    }
  }

  // 4. index map
  for (int64_t k = 0; k < P; ++k) im[k] = k;
  for (int64_t c = 0; c < n_unm; ++c) im[P + 2 * (int64_t)S.unm_list[c]] = P + c;
  for (int64_t i = 0; i < nA; ++i)
    if (S.merged[i]) im[P + 2 * i] = P + n_unm + best_j[i];
  for (int64_t j = 0; j < nB; ++j) im[P + 1 + 2 * j] = P + n_unm + j;

  // 5. outputs: protected, unmerged A, then size-weighted B (fp32 accumulation).
  const int32_t* unm_list = S.unm_list.data();
  const int32_t* csr_start = S.csr_start.data();
  const int32_t* csr_list = S.csr_list.data();
#pragma omp parallel for if (inner) schedule(static)
  for (int64_t o = 0; o < n_out; ++o) {
    if (o < P) {
      copy_row(xo + o * C, x + o * C, C);
      so[o] = s[o];
    } else if (o < P + n_unm) {
      const int64_t src = P + 2 * (int64_t)unm_list[o - P];
      copy_row(xo + o * C, x + src * C, C);
      so[o] = s[src];
    } else {
      const int64_t j = o - P - n_unm;
      const int64_t pb = P + 1 + 2 * j;
      const TX* __restrict xb = x + pb * C;
      float* __restrict acc = acc_buffer(C).data();
      const float sb = s[pb];
      float w = sb;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) acc[c] = to_f32(xb[c]) * sb;
      for (int32_t e = csr_start[j]; e < csr_start[j + 1]; ++e) {
        const int64_t pa = P + 2 * (int64_t)csr_list[e];
        const TX* __restrict xa = x + pa * C;
        const float sa = s[pa];
        w += sa;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) acc[c] += to_f32(xa[c]) * sa;
      }
      TX* __restrict dst = xo + o * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) dst[c] = from_f32<TX>(acc[c] / w);
      so[o] = w;
    }
  }
}

template <typename TX, typename TM>
void merge_typed(const MergeArgs& a) {
  std::atomic<int> bad_metric{0};
  const int threads = max_threads();
  if (a.B >= threads && threads > 1) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < a.B; ++b) merge_row<TX, TM>(a, b, false, bad_metric);
  } else {
    for (int64_t b = 0; b < a.B; ++b) {
      const int64_t n = a.lengths ? a.lengths[b] : a.N;
      const double half = double(n - a.P) / 2.0;
      const bool inner = threads > 1 && half * half * double(a.Cm) > kInnerParallelWork;
      merge_row<TX, TM>(a, b, inner, bad_metric);
    }
  }
  if (bad_metric.load()) throw ValueError("metric contains NaN or inf");
}

template <typename TX>
void merge_dispatch_metric(const MergeArgs& a) {
  switch (a.m_dtype) {
    case DType::F32: return merge_typed<TX, float>(a);
    case DType::F16: return merge_typed<TX, half_t>(a);
    case DType::BF16: return merge_typed<TX, bf16_t>(a);
    default: throw ValueError(std::string("metric must be float32, float16 or bfloat16, got ") +
                              dtype_name(a.m_dtype));
  }
}

template <typename T>
void spans_typed(const SpanArgs& a, std::atomic<int64_t>& bad) {
  const T big = std::numeric_limits<T>::max();
  const int64_t N = a.N, M = a.M;
#pragma omp parallel for schedule(static) if (a.B * N > 4096)
  for (int64_t b = 0; b < a.B; ++b) {
    const T* sp = static_cast<const T*>(a.spans) + b * N * 2;
    const int64_t* im = a.index_map + b * N;
    T* out = static_cast<T*>(a.out) + b * M * 2;
    for (int64_t o = 0; o < M; ++o) {
      out[2 * o] = big;
      out[2 * o + 1] = -big;
    }
    for (int64_t k = 0; k < N; ++k) {
      const int64_t t = im[k];
      if (t < 0) continue;
      if (t >= M) {
        bad.store(t);
        continue;
      }
      out[2 * t] = std::min(out[2 * t], sp[2 * k]);
      out[2 * t + 1] = std::max(out[2 * t + 1], sp[2 * k + 1]);
    }
    for (int64_t o = 0; o < M; ++o) {
      if (out[2 * o] == big) {
        out[2 * o] = 0;
        out[2 * o + 1] = 0;
      }
    }
  }
}

}  // namespace

void merge_cpu(const MergeArgs& a) {
  switch (a.x_dtype) {
    case DType::F32: return merge_dispatch_metric<float>(a);
    case DType::F16: return merge_dispatch_metric<half_t>(a);
    case DType::BF16: return merge_dispatch_metric<bf16_t>(a);
    default: throw ValueError(std::string("tokens must be float32, float16 or bfloat16, got ") +
                              dtype_name(a.x_dtype));
  }
}

void spans_cpu(const SpanArgs& a) {
  std::atomic<int64_t> bad{-1};
  if (a.dtype == DType::I64) {
    spans_typed<int64_t>(a, bad);
  } else if (a.dtype == DType::F64) {
    spans_typed<double>(a, bad);
  } else {
    throw ValueError(std::string("spans must be int64 or float64, got ") + dtype_name(a.dtype));
  }
  if (bad.load() >= 0)
    throw ValueError("index_map holds " + std::to_string(bad.load()) +
                     ", out of range for out_tokens=" + std::to_string(a.M));
}

}  // namespace pystream
