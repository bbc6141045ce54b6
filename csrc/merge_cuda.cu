// CUDA implementation of the batched bipartite merge (one fused kernel per merge step, one
// thread block per sequence) and of the span union. Tie-breaking is identical to the CPU and
// the PyTorch reference: each score is one warp reduction of the same shape for every (i, j);
// best_j keeps the first maximal j; ranks are "greater, or equal with a smaller index".
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core.h"

namespace pystream {
namespace {

#define PS_CUDA_CHECK(expr)                                                              \
  do {                                                                                   \
    cudaError_t err_ = (expr);                                                           \
    if (err_ != cudaSuccess)                                                             \
      throw std::runtime_error(std::string("pystream._core CUDA error: ") +              \
                               cudaGetErrorString(err_) + " (" #expr ")");               \
  } while (0)

struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(int dev) {
    if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
    if (prev != dev) PS_CUDA_CHECK(cudaSetDevice(dev));
  }
  ~DeviceGuard() {
    int cur = -1;
    if (prev >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != prev) cudaSetDevice(prev);
  }
};

// Stream-ordered scratch memory, freed on the same stream when the call ends.
struct Workspace {
  void* ptr = nullptr;
  cudaStream_t stream;
  Workspace(size_t bytes, cudaStream_t s) : stream(s) {
    if (bytes) PS_CUDA_CHECK(cudaMallocAsync(&ptr, bytes, stream));
  }
  ~Workspace() {
    if (ptr) cudaFreeAsync(ptr, stream);
  }
};

inline size_t align256(size_t v) { return (v + 255) / 256 * 256; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

constexpr int kThreads = 256;

template <typename TX, typename TM>
__global__ void __launch_bounds__(kThreads)
    merge_kernel(const TX* __restrict__ x, const float* __restrict__ sizes,
                 const TM* __restrict__ metric, int64_t N, int64_t C, int64_t Cm, int64_t M,
                 int64_t P, const int64_t* __restrict__ params, TX* __restrict__ xo,
                 float* __restrict__ so, int64_t* __restrict__ im, int64_t* __restrict__ len_out,
                 float* __restrict__ ws_nrm, float* __restrict__ ws_best,
                 int32_t* __restrict__ ws_int, int* __restrict__ err) {
  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x, nth = blockDim.x, lane = tid & 31, warp = tid >> 5;
  const int nwarps = nth >> 5;
  const int64_t n = params[2 * b], rb = params[2 * b + 1];
  x += b * N * C;
  sizes += b * N;
  metric += b * N * Cm;
  xo += b * M * C;
  so += b * M;
  im += b * N;
  float* nrm = ws_nrm + b * N * Cm;
  float* best = ws_best + b * N;
  int32_t* best_j = ws_int + b * 8 * N;
  int32_t* rank = best_j + N;
  int32_t* by_rank = rank + N;
  int32_t* unm_list = by_rank + N;
  int32_t* csr_start = unm_list + N;   // nB + 1 <= N + 1 entries
  int32_t* csr_list = csr_start + N + 1;
  int32_t* cursor = csr_list + N;      // nB <= N/2 entries: 7N + 1 + N/2 <= 8N per row
  const int64_t nA = (n - P + 1) / 2, nB = (n - P) / 2, n_out = n - rb;
  const bool merging = rb > 0 && nB > 0;
  if (tid == 0) len_out[b] = n_out;

  // 1. finite check of every metric row; normalise the rows that take part (one warp a row).
  for (int64_t t = warp; t < N; t += nwarps) {
    const TM* row = metric + t * Cm;
    float ss = 0.f, chk = 0.f;
    for (int64_t k = lane; k < Cm; k += 32) {
      const float v = to_f32(row[k]);
      ss += v * v;
      chk += v * 0.0f;
    }
    ss = warp_sum(ss);
    chk = warp_sum(chk);
    if (lane == 0 && !(chk == 0.f)) atomicOr(err, 1);
    if (merging && t >= P && t < n) {
      const float d = fmaxf(sqrtf(ss), 1e-12f);
      for (int64_t k = lane; k < Cm; k += 32) nrm[t * Cm + k] = to_f32(row[k]) / d;
    }
  }
  // padding
  for (int64_t t = n + tid; t < N; t += nth) im[t] = -1;
  for (int64_t e = n_out * C + tid; e < M * C; e += nth) xo[e] = from_f32<TX>(0.f);
  for (int64_t o = n_out + tid; o < M; o += nth) so[o] = 0.f;

  if (!merging) {  // protected, then A, then B
    for (int64_t e = tid; e < n * C; e += nth) {
      const int64_t o = e / C, c = e - o * C;
      const int64_t src = o < P ? o : (o < P + nA ? P + 2 * (o - P) : P + 1 + 2 * (o - P - nA));
      xo[e] = x[src * C + c];
    }
    for (int64_t o = tid; o < n; o += nth) {
      const int64_t src = o < P ? o : (o < P + nA ? P + 2 * (o - P) : P + 1 + 2 * (o - P - nA));
      so[o] = sizes[src];
      im[src] = o;
    }
    return;
  }
  __syncthreads();

  // 2. best B for each A: one warp per A row, same reduction shape for every (i, j).
  for (int64_t i = warp; i < nA; i += nwarps) {
    const float* a = nrm + (P + 2 * i) * Cm;
    float bv = -INFINITY;
    int32_t bj = 0;
    for (int64_t j = 0; j < nB; ++j) {
      const float* bb = nrm + (P + 1 + 2 * j) * Cm;
      float s = 0.f;
      for (int64_t k = lane; k < Cm; k += 32) s += a[k] * bb[k];
      s = warp_sum(s);
      if (s > bv) {
        bv = s;
        bj = (int32_t)j;
      }
    }
    if (lane == 0) {
      best[i] = bv;
      best_j[i] = bj;
    }
  }
  __syncthreads();

  // 3. stable descending rank.
  for (int64_t i = tid; i < nA; i += nth) {
    const float bi = best[i];
    int32_t r = 0;
    for (int64_t k = 0; k < nA; ++k) {
      const float bk = best[k];
      r += (bk > bi) || (bk == bi && k < i);
    }
    rank[i] = r;
    if (r < rb) by_rank[r] = (int32_t)i;
  }
  __syncthreads();

  const int64_t n_unm = nA - rb;
  // 4. index map and the list of unmerged A tokens; CSR of merges by destination (rank order).
  for (int64_t i = tid; i < nA; i += nth) {
    if (rank[i] >= rb) {
      int32_t c = 0;
      for (int64_t k = 0; k < i; ++k) c += rank[k] >= rb;
      unm_list[c] = (int32_t)i;
      im[P + 2 * i] = P + c;
    } else {
      im[P + 2 * i] = P + n_unm + best_j[i];
    }
  }
  for (int64_t k = tid; k < P; k += nth) im[k] = k;
  for (int64_t j = tid; j < nB; j += nth) im[P + 1 + 2 * j] = P + n_unm + j;
  if (tid == 0) {
    for (int64_t j = 0; j <= nB; ++j) csr_start[j] = 0;
    for (int64_t t = 0; t < rb; ++t) csr_start[best_j[by_rank[t]] + 1]++;
    for (int64_t j = 0; j < nB; ++j) {
      csr_start[j + 1] += csr_start[j];
      cursor[j] = csr_start[j];
    }
    for (int64_t t = 0; t < rb; ++t) {
      const int32_t i = by_rank[t];
      csr_list[cursor[best_j[i]]++] = i;
    }
  }
  __syncthreads();

  // 5. outputs
  for (int64_t o = tid; o < n_out; o += nth) {
    if (o < P) {
      so[o] = sizes[o];
    } else if (o < P + n_unm) {
      so[o] = sizes[P + 2 * (int64_t)unm_list[o - P]];
    } else {
      const int64_t j = o - P - n_unm;
      float w = sizes[P + 1 + 2 * j];
      for (int32_t e = csr_start[j]; e < csr_start[j + 1]; ++e) w += sizes[P + 2 * (int64_t)csr_list[e]];
      so[o] = w;
    }
  }
  for (int64_t e = tid; e < n_out * C; e += nth) {
    const int64_t o = e / C, c = e - o * C;
    if (o < P) {
      xo[e] = x[e];
    } else if (o < P + n_unm) {
      xo[e] = x[(P + 2 * (int64_t)unm_list[o - P]) * C + c];
    } else {
      const int64_t j = o - P - n_unm;
      const int64_t pb = P + 1 + 2 * j;
      const float sb = sizes[pb];
      float acc = to_f32(x[pb * C + c]) * sb, w = sb;
      for (int32_t q = csr_start[j]; q < csr_start[j + 1]; ++q) {
        const int64_t pa = P + 2 * (int64_t)csr_list[q];
        const float sa = sizes[pa];
        acc += to_f32(x[pa * C + c]) * sa;
        w += sa;
      }
      xo[e] = from_f32<TX>(acc / w);
    }
  }
}

template <typename TX, typename TM>
void launch_merge(const MergeArgs& a, cudaStream_t stream) {
  const int64_t B = a.B, N = a.N;
  std::vector<int64_t> params(2 * B);
  for (int64_t b = 0; b < B; ++b) {
    params[2 * b] = a.lengths ? a.lengths[b] : N;
    params[2 * b + 1] = a.r[b];
  }
  const size_t sz_nrm = align256(sizeof(float) * B * N * a.Cm);
  const size_t sz_best = align256(sizeof(float) * B * N);
  const size_t sz_int = align256(sizeof(int32_t) * B * (8 * N + 2));
  const size_t sz_par = align256(sizeof(int64_t) * 2 * B);
  Workspace ws(sz_nrm + sz_best + sz_int + sz_par + 256, stream);
  char* base = static_cast<char*>(ws.ptr);
  float* ws_nrm = reinterpret_cast<float*>(base);
  float* ws_best = reinterpret_cast<float*>(base + sz_nrm);
  int32_t* ws_int = reinterpret_cast<int32_t*>(base + sz_nrm + sz_best);
  int64_t* d_params = reinterpret_cast<int64_t*>(base + sz_nrm + sz_best + sz_int);
  int* d_err = reinterpret_cast<int*>(base + sz_nrm + sz_best + sz_int + sz_par);
  PS_CUDA_CHECK(cudaMemcpyAsync(d_params, params.data(), sizeof(int64_t) * 2 * B,
                                cudaMemcpyHostToDevice, stream));
  PS_CUDA_CHECK(cudaMemsetAsync(d_err, 0, sizeof(int), stream));
  merge_kernel<TX, TM><<<(unsigned)B, kThreads, 0, stream>>>(
      static_cast<const TX*>(a.x), a.sizes, static_cast<const TM*>(a.metric), N, a.C, a.Cm, a.M,
      a.P, d_params, static_cast<TX*>(a.x_out), a.sizes_out, a.index_map, a.lengths_out, ws_nrm,
      ws_best, ws_int, d_err);
  PS_CUDA_CHECK(cudaGetLastError());
  if (!a.check_finite) return;  // fully asynchronous; the workspace is freed stream-ordered
  int h_err = 0;
  PS_CUDA_CHECK(cudaMemcpyAsync(&h_err, d_err, sizeof(int), cudaMemcpyDeviceToHost, stream));
  PS_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (h_err) throw ValueError("metric contains NaN or inf");
}

template <typename TX>
void merge_metric_dispatch(const MergeArgs& a, cudaStream_t s) {
  switch (a.m_dtype) {
    case DType::F32: return launch_merge<TX, float>(a, s);
    case DType::F16: return launch_merge<TX, half_t>(a, s);
    case DType::BF16: return launch_merge<TX, bf16_t>(a, s);
    default: throw ValueError("metric must be float32, float16 or bfloat16");
  }
}

template <typename T>
__global__ void spans_kernel(const T* __restrict__ spans, const int64_t* __restrict__ im,
                             T* __restrict__ out, int64_t B, int64_t N, int64_t M, T big,
                             unsigned long long* __restrict__ bad) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < B * N; e += stride) {
    const int64_t t = im[e];
    if (t >= M) atomicMax(bad, (unsigned long long)(t + 1));  // 0 means none
  }
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < B * M; e += stride) {
    const int64_t b = e / M, o = e - b * M;
    T s = big, en = -big;
    for (int64_t k = 0; k < N; ++k) {
      if (im[b * N + k] == o) {
        const T s0 = spans[(b * N + k) * 2], s1 = spans[(b * N + k) * 2 + 1];
        s = s0 < s ? s0 : s;
        en = s1 > en ? s1 : en;
      }
    }
    const bool filled = s != big;
    out[2 * e] = filled ? s : T(0);
    out[2 * e + 1] = filled ? en : T(0);
  }
}

}  // namespace

bool cuda_compiled() { return true; }

bool cuda_device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error
    return false;
  }
  return count > 0;
}

std::string cuda_build_info() {
  int rt = 0;
  cudaRuntimeGetVersion(&rt);
  return "cuda runtime " + std::to_string(rt / 1000) + "." + std::to_string((rt % 1000) / 10);
}

void merge_cuda(const MergeArgs& a) {
  if (a.B == 0) return;
  DeviceGuard g(a.device_id);
  cudaStream_t s = static_cast<cudaStream_t>(a.stream);
  switch (a.x_dtype) {
    case DType::F32: return merge_metric_dispatch<float>(a, s);
    case DType::F16: return merge_metric_dispatch<half_t>(a, s);
    case DType::BF16: return merge_metric_dispatch<bf16_t>(a, s);
    default: throw ValueError("tokens must be float32, float16 or bfloat16");
  }
}

void spans_cuda(const SpanArgs& a) {
  if (a.B == 0 || (a.M == 0 && a.N == 0)) return;
  DeviceGuard g(a.device_id);
  cudaStream_t s = static_cast<cudaStream_t>(a.stream);
  Workspace ws(sizeof(unsigned long long), s);
  auto* d_bad = static_cast<unsigned long long*>(ws.ptr);
  PS_CUDA_CHECK(cudaMemsetAsync(d_bad, 0, sizeof(unsigned long long), s));
  const int64_t work = std::max<int64_t>(a.B * a.M, a.B * a.N);
  const int blocks = (int)std::min<int64_t>((work + 255) / 256, 4096);
  if (a.dtype == DType::I64) {
    spans_kernel<int64_t><<<blocks, 256, 0, s>>>(
        static_cast<const int64_t*>(a.spans), a.index_map, static_cast<int64_t*>(a.out), a.B,
        a.N, a.M, INT64_MAX, d_bad);
  } else if (a.dtype == DType::F64) {
    spans_kernel<double><<<blocks, 256, 0, s>>>(
        static_cast<const double*>(a.spans), a.index_map, static_cast<double*>(a.out), a.B, a.N,
        a.M, 1.7976931348623157e308, d_bad);
  } else {
    throw ValueError("spans must be int64 or float64");
  }
  PS_CUDA_CHECK(cudaGetLastError());
  unsigned long long h_bad = 0;
  PS_CUDA_CHECK(cudaMemcpyAsync(&h_bad, d_bad, sizeof(h_bad), cudaMemcpyDeviceToHost, s));
  PS_CUDA_CHECK(cudaStreamSynchronize(s));
  if (h_bad != 0)
    throw ValueError("index_map holds " + std::to_string(h_bad - 1) +
                     ", out of range for out_tokens=" + std::to_string(a.M));
}

void cuda_copy_to_device(void* dst, const void* src, size_t bytes, int device_id, void* stream) {
  if (!bytes) return;
  DeviceGuard g(device_id);
  PS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice,
                                static_cast<cudaStream_t>(stream)));
}

void cuda_memset_device(void* dst, size_t bytes, int device_id, void* stream) {
  if (!bytes) return;
  DeviceGuard g(device_id);
  PS_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, static_cast<cudaStream_t>(stream)));
}

void cuda_stream_sync(int device_id, void* stream) {
  DeviceGuard g(device_id);
  PS_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

}  // namespace pystream
