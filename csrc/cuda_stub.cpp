// Built instead of merge_cuda.cu when the module is compiled without CUDA.
#include "core.h"

namespace pystream {

namespace {
[[noreturn]] void no_cuda() {
  throw ValueError("pystream._core was built without CUDA (rebuild with nvcc available, "
                   "PYSTREAM_CUDA=on) or use CPU tensors");
}
}  // namespace

bool cuda_compiled() { return false; }
bool cuda_device_available() { return false; }
std::string cuda_build_info() { return "not compiled"; }
void merge_cuda(const MergeArgs&) { no_cuda(); }
void spans_cuda(const SpanArgs&) { no_cuda(); }
void cuda_copy_to_device(void*, const void*, size_t, int, void*) { no_cuda(); }
void cuda_memset_device(void*, size_t, int, void*) { no_cuda(); }
void cuda_stream_sync(int, void*) { no_cuda(); }

}  // namespace pystream
