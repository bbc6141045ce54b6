#include "stream_states.h"

#include "serial.h"

#include <algorithm>
#include <cstring>
#include <limits>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pystream {

// ---------------------------------------------------------------------------------------------
// CRC-32 (IEEE 802.3 / zlib polynomial, reflected), table driven.
namespace {
struct CrcTable {
  uint32_t t[256];
  CrcTable() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
      t[i] = c;
    }
  }
};
const CrcTable& crc_table() {
  static const CrcTable table;
  return table;
}
}  // namespace

uint32_t crc32(const void* data, size_t len, uint32_t crc) {
  const uint32_t* t = crc_table().t;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < len; ++i) crc = t[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

StreamStates::StreamStates(int64_t max_chunks, int64_t max_bytes)
    : max_chunks_(max_chunks), max_bytes_(max_bytes) {
  if (max_chunks < 1) throw ValueError("max_chunks must be >= 1, got " + std::to_string(max_chunks));
  if (max_bytes < 1) throw ValueError("max_bytes must be >= 1, got " + std::to_string(max_bytes));
}

const Stream& StreamStates::get(const std::string& id) const {
  auto it = streams_.find(id);
  if (it == streams_.end()) throw KeyError("unknown stream id " + quoted(id));
  return it->second;
}

using ReadLock = std::shared_lock<std::shared_mutex>;
using WriteLock = std::unique_lock<std::shared_mutex>;

int64_t StreamStates::num_chunks(const std::string& id) const {
  ReadLock lk(mu_);
  return (int64_t)get(id).chunks.size();
}
int64_t StreamStates::last_seq(const std::string& id) const {
  ReadLock lk(mu_);
  return get(id).last_seq;
}
int64_t StreamStates::token_dim(const std::string& id) const {
  ReadLock lk(mu_);
  return get(id).C;
}
DType StreamStates::dtype(const std::string& id) const {
  ReadLock lk(mu_);
  return get(id).dtype;
}
bool StreamStates::contains(const std::string& id) const {
  ReadLock lk(mu_);
  return streams_.count(id) != 0;
}
size_t StreamStates::size() const {
  ReadLock lk(mu_);
  return streams_.size();
}
int64_t StreamStates::nbytes() const {
  ReadLock lk(mu_);
  return nbytes_;
}

void StreamStates::drop(const std::string& id) {
  WriteLock lk(mu_);
  auto it = streams_.find(id);
  if (it == streams_.end()) throw KeyError("unknown stream id " + quoted(id));
  for (const Chunk& c : it->second.chunks) nbytes_ -= (int64_t)c.nbytes();
  streams_.erase(it);
}

std::vector<std::string> StreamStates::ids() const {
  ReadLock lk(mu_);
  std::vector<std::string> out;
  out.reserve(streams_.size());
  for (const auto& kv : streams_) out.push_back(kv.first);
  return out;
}

void StreamStates::push(const std::string& id, DType dtype, const void* tokens, int64_t n,
                        int64_t C, const float* sizes, const int64_t* frames,
                        const double* times, int64_t seq) {
  if (!float_dtype(dtype))
    throw ValueError(std::string("tokens must be float32, float16 or bfloat16, got ") +
                     dtype_name(dtype));
  if (n < 0 || C < 0) throw ValueError("negative shape");
  WriteLock lk(mu_);
  auto it = streams_.find(id);
  const Stream* existing = it == streams_.end() ? nullptr : &it->second;
  if (existing) {
    if (existing->C != C)
      throw ValueError("stream " + quoted(id) + " holds tokens with C=" +
                       std::to_string(existing->C) + ", got C=" + std::to_string(C));
    if (existing->dtype != dtype)
      throw ValueError("stream " + quoted(id) + " holds " + dtype_name(existing->dtype) +
                       " tokens, got " + dtype_name(dtype));
    if (seq <= existing->last_seq)
      throw ValueError("stream " + quoted(id) + ": seq must increase, got " +
                       std::to_string(seq) + " after " + std::to_string(existing->last_seq));
  }
  const size_t tok_bytes = (size_t)n * (size_t)C * dtype_size(dtype);
  const int64_t add = (int64_t)(tok_bytes + (size_t)n * (sizeof(float) + 2 * sizeof(int64_t) +
                                                         2 * sizeof(double)));
  int64_t freed = 0;
  if (existing && (int64_t)existing->chunks.size() >= max_chunks_) {
    const int64_t evict = (int64_t)existing->chunks.size() - max_chunks_ + 1;
    for (int64_t k = 0; k < evict; ++k) freed += (int64_t)existing->chunks[k].nbytes();
  }
  const int64_t total = nbytes_ - freed + add;
  if (total > max_bytes_)
    throw MemoryError("StreamStates: pushing " + std::to_string(add) + " bytes to stream " +
                      quoted(id) + " would hold " + std::to_string(total) +
                      " bytes, above max_bytes=" + std::to_string(max_bytes_) +
                      " (drop streams or raise max_bytes)");

  Chunk c;
  c.seq = seq;
  c.n = n;
  c.tokens.resize(tok_bytes);
  if (tok_bytes) std::memcpy(c.tokens.data(), tokens, tok_bytes);
  c.sizes.assign(sizes, sizes + n);
  c.frames.assign(frames, frames + 2 * n);
  c.times.assign(times, times + 2 * n);

  Stream& s = streams_[id];  // creates when new
  if (!existing) {
    s.dtype = dtype;
    s.C = C;
  }
  while ((int64_t)s.chunks.size() >= max_chunks_) s.chunks.pop_front();
  s.chunks.push_back(std::move(c));
  s.last_seq = seq;
  nbytes_ = total;
}

WindowBatch StreamStates::windows(const std::vector<std::string>& ids) const {
  ReadLock lk(mu_);
  const int64_t S = (int64_t)ids.size();
  std::vector<const Stream*> ss(S);
  DType dtype = DType::F32;
  int64_t C = 0, Nmax = 0, Kmax = 0;
  for (int64_t k = 0; k < S; ++k) {
    ss[k] = &get(ids[k]);
    if (k == 0) {
      dtype = ss[k]->dtype;
      C = ss[k]->C;
    } else if (ss[k]->C != C || ss[k]->dtype != dtype) {
      throw ValueError("windows(): streams " + quoted(ids[0]) + " (" + dtype_name(dtype) +
                       ", C=" + std::to_string(C) + ") and " + quoted(ids[k]) + " (" +
                       dtype_name(ss[k]->dtype) + ", C=" + std::to_string(ss[k]->C) +
                       ") cannot be batched together");
    }
    int64_t tot = 0;
    for (const Chunk& c : ss[k]->chunks) tot += c.n;
    Nmax = std::max(Nmax, tot);
    Kmax = std::max(Kmax, (int64_t)ss[k]->chunks.size());
  }
  WindowBatch w;
  const size_t es = dtype_size(dtype);
  w.tokens = zeroed_array(dtype, {S, Nmax, C});
  w.sizes = zeroed_array(DType::F32, {S, Nmax});
  w.frames = zeroed_array(DType::I64, {S, Nmax, 2});
  w.times = zeroed_array(DType::F64, {S, Nmax, 2});
  w.lengths = zeroed_array(DType::I64, {S});
  w.chunk_lengths = zeroed_array(DType::I64, {S, Kmax});
  uint8_t* tok = w.tokens.data.data();
  float* sz = reinterpret_cast<float*>(w.sizes.data.data());
  int64_t* fr = reinterpret_cast<int64_t*>(w.frames.data.data());
  double* tm = reinterpret_cast<double*>(w.times.data.data());
  int64_t* len = reinterpret_cast<int64_t*>(w.lengths.data.data());
  int64_t* cl = reinterpret_cast<int64_t*>(w.chunk_lengths.data.data());
#pragma omp parallel for schedule(dynamic, 1) if (S > 1 && Nmax * C > 16384)
  for (int64_t k = 0; k < S; ++k) {
    int64_t off = 0, q = 0;
    for (const Chunk& c : ss[k]->chunks) {
      const int64_t row = k * Nmax + off;
      if (c.n) {
        std::memcpy(tok + (size_t)row * C * es, c.tokens.data(), c.tokens.size());
        std::memcpy(sz + row, c.sizes.data(), sizeof(float) * c.n);
        std::memcpy(fr + 2 * row, c.frames.data(), sizeof(int64_t) * 2 * c.n);
        std::memcpy(tm + 2 * row, c.times.data(), sizeof(double) * 2 * c.n);
      }
      cl[k * Kmax + q++] = c.n;
      off += c.n;
    }
    len[k] = off;
  }
  return w;
}

WindowBatch StreamStates::window(const std::string& id) const {
  WindowBatch w = windows({id});
  // drop the leading S=1 axis (the data are already exactly the unpadded window)
  for (HostArray* a : {&w.tokens, &w.sizes, &w.frames, &w.times, &w.chunk_lengths})
    a->shape.erase(a->shape.begin());
  return w;
}

// ---------------------------------------------------------------------------------------------
// Serialised format (little endian):
//   header, 32 bytes: magic "PYSTSTAT" | u32 version (1) | u32 header size (32)
//                     | u64 payload size | u32 CRC-32 of payload | u32 reserved (0)
//   payload: i64 max_chunks | i64 max_bytes | u64 stream count, then per stream:
//     u64 id length | id bytes | i32 dtype | i32 reserved | i64 C | i64 last_seq | u64 chunks,
//     then per chunk: i64 seq | i64 n | tokens (n*C*elem) | sizes f32[n] | frames i64[n,2]
//                     | times f64[n,2]
namespace {

constexpr char kMagic[8] = {'P', 'Y', 'S', 'T', 'S', 'T', 'A', 'T'};
constexpr uint32_t kVersion = 1;

static_assert(sizeof(double) == 8 && sizeof(float) == 4, "IEEE floats expected");

}  // namespace

std::string StreamStates::to_bytes(const std::vector<std::string>* only) const {
  if (!little_endian()) throw ValueError("StreamStates serialisation needs a little-endian host");
  ReadLock lk(mu_);
  const auto kept = selected(streams_, only);
  Writer w;
  w.put<int64_t>(max_chunks_);
  w.put<int64_t>(max_bytes_);
  w.put<uint64_t>(kept.size());
  for (const auto* kvp : kept) {
    const auto& kv = *kvp;
    const Stream& s = kv.second;
    w.put<uint64_t>(kv.first.size());
    w.bytes(kv.first.data(), kv.first.size());
    w.put<int32_t>((int32_t)s.dtype);
    w.put<int32_t>(0);
    w.put<int64_t>(s.C);
    w.put<int64_t>(s.last_seq);
    w.put<uint64_t>(s.chunks.size());
    for (const Chunk& c : s.chunks) {
      w.put<int64_t>(c.seq);
      w.put<int64_t>(c.n);
      w.bytes(c.tokens.data(), c.tokens.size());
      w.bytes(c.sizes.data(), sizeof(float) * c.sizes.size());
      w.bytes(c.frames.data(), sizeof(int64_t) * c.frames.size());
      w.bytes(c.times.data(), sizeof(double) * c.times.size());
    }
  }
  return seal_blob(kMagic, kVersion, w.out);
}

StreamStates StreamStates::from_bytes(const char* data, size_t len) {
  const std::string pre = "StreamStates.from_bytes: ";
  Reader r = open_blob(data, len, kMagic, kVersion, "StreamStates.from_bytes", "StreamStates");
  const int64_t max_chunks = r.get<int64_t>("max_chunks");
  const int64_t max_bytes = r.get<int64_t>("max_bytes");
  if (max_chunks < 1 || max_bytes < 1) throw ValueError(pre + "corrupt limits");
  StreamStates st(max_chunks, max_bytes);
  const uint64_t ns = r.get<uint64_t>("stream count");
  for (uint64_t k = 0; k < ns; ++k) {
    const uint64_t idlen = r.get<uint64_t>("stream id length");
    r.need(idlen, "stream id");
    std::string id(r.p, (size_t)idlen);
    r.p += idlen;
    r.left -= idlen;
    Stream s;
    const int32_t dt = r.get<int32_t>("dtype");
    r.get<int32_t>("reserved");
    if (dt != (int32_t)DType::F32 && dt != (int32_t)DType::F16 && dt != (int32_t)DType::BF16)
      throw ValueError(pre + "corrupt dtype code " + std::to_string(dt));
    s.dtype = (DType)dt;
    s.C = r.get<int64_t>("C");
    s.last_seq = r.get<int64_t>("last_seq");
    const uint64_t nc = r.get<uint64_t>("chunk count");
    if (s.C < 0 || nc > (uint64_t)max_chunks) throw ValueError(pre + "corrupt stream header");
    const size_t es = dtype_size(s.dtype);
    for (uint64_t q = 0; q < nc; ++q) {
      Chunk c;
      c.seq = r.get<int64_t>("chunk seq");
      c.n = r.get<int64_t>("chunk length");
      if (c.n < 0 || (s.C && (uint64_t)c.n > r.left / ((uint64_t)s.C * es)) ||
          (uint64_t)c.n > r.left / 36)
        throw ValueError(pre + "corrupt chunk length");
      c.tokens.resize((size_t)c.n * s.C * es);
      r.bytes(c.tokens.data(), c.tokens.size(), "tokens");
      c.sizes.resize(c.n);
      r.bytes(c.sizes.data(), sizeof(float) * c.n, "sizes");
      c.frames.resize(2 * c.n);
      r.bytes(c.frames.data(), sizeof(int64_t) * 2 * c.n, "frames");
      c.times.resize(2 * c.n);
      r.bytes(c.times.data(), sizeof(double) * 2 * c.n, "times");
      st.nbytes_ += (int64_t)c.nbytes();
      s.chunks.push_back(std::move(c));
    }
    if (!st.streams_.emplace(id, std::move(s)).second)
      throw ValueError(pre + "corrupt state (stream " + quoted(id) + " appears twice)");
  }
  if (r.left != 0) throw ValueError(pre + "corrupt state (unparsed trailing payload)");
  return st;
}

}  // namespace pystream
