// Static-patch reuse caches, per stream, owned by C++ beside the carried tokens (StreamStates).
//
// For every stream one fixed-size record: the input embedding each position was last computed
// from (ref [N, C]), the keys and values of every reused layer (k, v [L, N, C]), the last reused
// layer's outputs (out [N, C]), the record's age in chunks, and counters (patches seen, reused)
// for status. The record size is fixed by (L, N, C, dtypes), so the state per stream is constant
// over time and max_bytes bounds the whole. pystream/model/reuse.py gathers the records of a
// batch's streams into [S, ...] arrays, gates and computes in torch, and puts the new records
// back: one copy each way, no per-stream Python loop.
#pragma once
#include <cstdint>
#include <map>
#include <shared_mutex>
#include <string>
#include <vector>

#include "common.h"
#include "stream_states.h"  // HostArray

namespace pystream {

struct ReuseRecord {
  int64_t age = 0;      // chunks since every position was last recomputed
  int64_t patches = 0;  // patch tokens seen (CLS excluded)
  int64_t reused = 0;   // of which reused their cached state
  std::vector<uint8_t> ref, k, v, out;
};

struct ReuseBatch {
  HostArray ref, k, v, out, age;  // age [S] int64, -1 where the stream has no record
};

class ReuseStates {
 public:
  // tok_dtype: ref and out (the residual stream's dtype); kv_dtype: keys and values.
  ReuseStates(int64_t layers, int64_t tokens, int64_t dim, DType tok_dtype, DType kv_dtype,
              int64_t max_bytes);

  // Records of `ids` stacked: ref/out [S, N, C], k/v [S, L, N, C], age [S]. A stream without a
  // record gets zeros and age -1. Ids may repeat.
  ReuseBatch gather(const std::vector<std::string>& ids) const;

  // Replaces the records of `ids` (distinct) with rows of the given [S, ...] arrays and adds
  // patches/reused to their counters. MemoryError (nothing changed) beyond max_bytes.
  void put(const std::vector<std::string>& ids, const void* ref, const void* k, const void* v,
           const void* out, const int64_t* age, const int64_t* patches, const int64_t* reused);

  // Sets the age of existing records and adds to their counters, leaving the cached values as
  // they are (a pass that reused them). KeyError (nothing changed) for a stream without one.
  void advance(const std::vector<std::string>& ids, const int64_t* age, const int64_t* patches,
               const int64_t* reused);

  std::pair<int64_t, int64_t> counts(const std::string& id) const;  // (patches, reused); KeyError
  int64_t age(const std::string& id) const;
  bool contains(const std::string& id) const;
  void drop(const std::string& id);  // no-op when unknown
  std::vector<std::string> ids() const;
  size_t size() const;
  int64_t nbytes() const;
  int64_t record_bytes() const { return record_bytes_; }
  int64_t max_bytes() const { return max_bytes_; }
  int64_t layers() const { return L_; }
  int64_t tokens() const { return N_; }
  int64_t dim() const { return C_; }
  DType tok_dtype() const { return tok_dtype_; }
  DType kv_dtype() const { return kv_dtype_; }

  // `only`: serialise just these streams (ids it does not hold are skipped); null: all.
  std::string to_bytes(const std::vector<std::string>* only = nullptr) const;
  static ReuseStates from_bytes(const char* data, size_t len);

  ReuseStates(ReuseStates&& o) noexcept
      : L_(o.L_), N_(o.N_), C_(o.C_), tok_dtype_(o.tok_dtype_), kv_dtype_(o.kv_dtype_),
        max_bytes_(o.max_bytes_), record_bytes_(o.record_bytes_),
        records_(std::move(o.records_)) {}

 private:
  size_t tok_bytes() const { return (size_t)N_ * C_ * dtype_size(tok_dtype_); }
  size_t kv_bytes() const { return (size_t)L_ * N_ * C_ * dtype_size(kv_dtype_); }

  mutable std::shared_mutex mu_;  // the bindings release the GIL
  int64_t L_, N_, C_;
  DType tok_dtype_, kv_dtype_;
  int64_t max_bytes_;
  int64_t record_bytes_;
  std::map<std::string, ReuseRecord> records_;
};

}  // namespace pystream
