// Carried per-stream state: the merged tokens, sizes and provenance of each stream's most recent
// chunks, owned by C++ (bounded by a chunk count per stream and a byte budget overall).
#pragma once
#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "common.h"
#include "serial.h"

namespace pystream {

struct Chunk {
  int64_t seq = 0;
  int64_t n = 0;
  std::vector<uint8_t> tokens;  // [n, C] in the stream's dtype
  std::vector<float> sizes;     // [n]
  std::vector<int64_t> frames;  // [n, 2]
  std::vector<double> times;    // [n, 2]
  size_t nbytes() const {
    return tokens.size() + sizeof(float) * sizes.size() + sizeof(int64_t) * frames.size() +
           sizeof(double) * times.size();
  }
};

struct Stream {
  DType dtype = DType::F32;
  int64_t C = 0;
  int64_t last_seq = 0;
  std::deque<Chunk> chunks;
};

// A host buffer handed to Python (as a DLPack capsule) without a copy.
struct HostArray {
  std::vector<uint8_t> data;
  std::vector<int64_t> shape;
  DType dtype = DType::F32;
};

// A zero-filled host array (at least one byte, so an empty one still has a data pointer).
inline HostArray zeroed_array(DType dt, std::vector<int64_t> shape) {
  HostArray a;
  a.dtype = dt;
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  a.shape = std::move(shape);
  a.data.assign(std::max<size_t>(1, dtype_size(dt) * (size_t)numel), 0);
  return a;
}

struct WindowBatch {
  HostArray tokens, sizes, frames, times, lengths, chunk_lengths;
};

class StreamStates {
 public:
  StreamStates(int64_t max_chunks, int64_t max_bytes);

  // Copies one chunk in; evicts the stream's oldest chunk beyond max_chunks. Throws ValueError /
  // MemoryError (before changing anything) on bad input or when max_bytes would be exceeded.
  void push(const std::string& id, DType dtype, const void* tokens, int64_t n, int64_t C,
            const float* sizes, const int64_t* frames, const double* times, int64_t seq);

  // batched: tokens [S, Nmax, C] zero padded, sizes [S, Nmax], frames/times [S, Nmax, 2],
  // lengths [S], chunk_lengths [S, Kmax] (zero padded). single: the same without the S axis and
  // unpadded (chunk_lengths [k]).
  WindowBatch windows(const std::vector<std::string>& ids) const;
  WindowBatch window(const std::string& id) const;

  // Facts about one stream (KeyError when unknown).
  int64_t num_chunks(const std::string& id) const;
  int64_t last_seq(const std::string& id) const;
  int64_t token_dim(const std::string& id) const;
  DType dtype(const std::string& id) const;
  bool contains(const std::string& id) const;
  void drop(const std::string& id);
  std::vector<std::string> ids() const;
  size_t size() const;
  int64_t nbytes() const;
  int64_t max_chunks() const { return max_chunks_; }
  int64_t max_bytes() const { return max_bytes_; }

  // `only`: serialise just these streams (ids it does not hold are skipped); null: all.
  std::string to_bytes(const std::vector<std::string>* only = nullptr) const;
  static StreamStates from_bytes(const char* data, size_t len);

  StreamStates(StreamStates&& o) noexcept
      : max_chunks_(o.max_chunks_), max_bytes_(o.max_bytes_), nbytes_(o.nbytes_),
        streams_(std::move(o.streams_)) {}

 private:
  const Stream& get(const std::string& id) const;  // KeyError; caller holds mu_

  // Thread safety: the bindings release the GIL, so every method takes this lock (shared for
  // reads, exclusive for push/drop).
  mutable std::shared_mutex mu_;
  int64_t max_chunks_;
  int64_t max_bytes_;
  int64_t nbytes_ = 0;
  std::map<std::string, Stream> streams_;
};

}  // namespace pystream
