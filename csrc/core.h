// Plain-pointer entry points of the core (no pybind11, no torch): used by bindings.cpp and
// implemented in merge_cpu.cpp (OpenMP) and merge_cuda.cu (CUDA).
#pragma once
#include <cstdint>
#include <string>

#include "common.h"

namespace pystream {

// One batched bipartite merge step; see pystream/merge_reference.py for the exact rule.
// All arrays are contiguous. lengths/r are HOST arrays of B entries (already validated);
// the tensors live on the CPU (merge_cpu) or on CUDA device `device_id` (merge_cuda).
struct MergeArgs {
  DType x_dtype = DType::F32;  // tokens and x_out
  DType m_dtype = DType::F32;  // metric
  const void* x = nullptr;     // [B, N, C]
  const float* sizes = nullptr;  // [B, N]
  const void* metric = nullptr;  // [B, N, Cm]
  int64_t B = 0, N = 0, C = 0, Cm = 0, M = 0, P = 0;
  const int64_t* lengths = nullptr;  // host [B]
  const int64_t* r = nullptr;        // host [B]
  void* x_out = nullptr;             // [B, M, C]
  float* sizes_out = nullptr;        // [B, M]
  int64_t* index_map = nullptr;      // [B, N]
  int64_t* lengths_out = nullptr;    // [B]
  int device_id = 0;
  void* stream = nullptr;  // cudaStream_t
  // CUDA only: read the NaN/inf flag back (one stream sync per call). The CPU always checks.
  bool check_finite = true;
};

// Span union under an index map (merge_reference.merge_spans). dtype is I64 or F64.
struct SpanArgs {
  DType dtype = DType::I64;
  const void* spans = nullptr;       // [B, N, 2]
  const int64_t* index_map = nullptr;  // [B, N]
  void* out = nullptr;               // [B, M, 2]
  int64_t B = 0, N = 0, M = 0;
  int device_id = 0;
  void* stream = nullptr;
};

// Throw ValueError("metric contains NaN or inf") etc. on bad data found while computing.
void merge_cpu(const MergeArgs& a);
void spans_cpu(const SpanArgs& a);

// CUDA side (stubs that throw when the module was built without CUDA).
bool cuda_compiled();
bool cuda_device_available();
std::string cuda_build_info();
void merge_cuda(const MergeArgs& a);
void spans_cuda(const SpanArgs& a);
// Copies between host and a CUDA device (used by StreamStates windows into CUDA tensors).
void cuda_copy_to_device(void* dst, const void* src, size_t bytes, int device_id, void* stream);
void cuda_memset_device(void* dst, size_t bytes, int device_id, void* stream);
void cuda_stream_sync(int device_id, void* stream);

}  // namespace pystream
