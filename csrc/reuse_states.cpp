#include "reuse_states.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "serial.h"

namespace pystream {

namespace {

using ReadLock = std::shared_lock<std::shared_mutex>;
using WriteLock = std::unique_lock<std::shared_mutex>;

constexpr char kMagic[8] = {'P', 'Y', 'R', 'E', 'U', 'S', 'E', '1'};
constexpr uint32_t kVersion = 1;

}  // namespace

ReuseStates::ReuseStates(int64_t layers, int64_t tokens, int64_t dim, DType tok_dtype,
                         DType kv_dtype, int64_t max_bytes)
    : L_(layers), N_(tokens), C_(dim), tok_dtype_(tok_dtype), kv_dtype_(kv_dtype),
      max_bytes_(max_bytes) {
  if (layers < 1 || tokens < 1 || dim < 1)
    throw ValueError("ReuseStates: layers, tokens and dim must be >= 1, got " +
                     std::to_string(layers) + ", " + std::to_string(tokens) + ", " +
                     std::to_string(dim));
  if (!float_dtype(tok_dtype) || !float_dtype(kv_dtype))
    throw ValueError("ReuseStates: dtypes must be float32, float16 or bfloat16");
  if (max_bytes < 1) throw ValueError("max_bytes must be >= 1, got " + std::to_string(max_bytes));
  record_bytes_ = (int64_t)(2 * tok_bytes() + 2 * kv_bytes());
}

ReuseBatch ReuseStates::gather(const std::vector<std::string>& ids) const {
  ReadLock lk(mu_);
  const int64_t S = (int64_t)ids.size();
  ReuseBatch b;
  b.ref = zeroed_array(tok_dtype_, {S, N_, C_});
  b.out = zeroed_array(tok_dtype_, {S, N_, C_});
  b.k = zeroed_array(kv_dtype_, {S, L_, N_, C_});
  b.v = zeroed_array(kv_dtype_, {S, L_, N_, C_});
  b.age = zeroed_array(DType::I64, {S});
  auto* age = reinterpret_cast<int64_t*>(b.age.data.data());
  const size_t tb = tok_bytes(), kb = kv_bytes();
  for (int64_t s = 0; s < S; ++s) {
    auto it = records_.find(ids[s]);
    if (it == records_.end()) {
      age[s] = -1;
      continue;
    }
    const ReuseRecord& r = it->second;
    std::memcpy(b.ref.data.data() + s * tb, r.ref.data(), tb);
    std::memcpy(b.out.data.data() + s * tb, r.out.data(), tb);
    std::memcpy(b.k.data.data() + s * kb, r.k.data(), kb);
    std::memcpy(b.v.data.data() + s * kb, r.v.data(), kb);
    age[s] = r.age;
  }
  return b;
}

void ReuseStates::put(const std::vector<std::string>& ids, const void* ref, const void* k,
                      const void* v, const void* out, const int64_t* age,
                      const int64_t* patches, const int64_t* reused) {
  const int64_t S = (int64_t)ids.size();
  std::set<std::string> distinct(ids.begin(), ids.end());
  if ((int64_t)distinct.size() != S) throw ValueError("ReuseStates.put: stream ids repeat");
  WriteLock lk(mu_);
  int64_t added = 0;
  for (const auto& id : ids) added += records_.count(id) ? 0 : 1;
  const int64_t total = (int64_t)(records_.size() + added) * record_bytes_;
  if (total > max_bytes_)
    throw MemoryError("ReuseStates: " + std::to_string(records_.size() + added) +
                      " streams would hold " + std::to_string(total) +
                      " bytes, above max_bytes=" + std::to_string(max_bytes_) +
                      " (drop streams or raise max_bytes)");
  const size_t tb = tok_bytes(), kb = kv_bytes();
  const auto* pr = static_cast<const uint8_t*>(ref);
  const auto* pk = static_cast<const uint8_t*>(k);
  const auto* pv = static_cast<const uint8_t*>(v);
  const auto* po = static_cast<const uint8_t*>(out);
  for (int64_t s = 0; s < S; ++s) {
    ReuseRecord& r = records_[ids[s]];  // creates when new
    r.ref.assign(pr + s * tb, pr + (s + 1) * tb);
    r.out.assign(po + s * tb, po + (s + 1) * tb);
    r.k.assign(pk + s * kb, pk + (s + 1) * kb);
    r.v.assign(pv + s * kb, pv + (s + 1) * kb);
    r.age = age[s];
    r.patches += patches[s];
    r.reused += reused[s];
  }
}

void ReuseStates::advance(const std::vector<std::string>& ids, const int64_t* age,
                          const int64_t* patches, const int64_t* reused) {
  WriteLock lk(mu_);
  for (const auto& id : ids)
    if (!records_.count(id)) throw KeyError("unknown stream id " + quoted(id));
  for (size_t s = 0; s < ids.size(); ++s) {
    ReuseRecord& r = records_[ids[s]];
    r.age = age[s];
    r.patches += patches[s];
    r.reused += reused[s];
  }
}

std::pair<int64_t, int64_t> ReuseStates::counts(const std::string& id) const {
  ReadLock lk(mu_);
  auto it = records_.find(id);
  if (it == records_.end()) throw KeyError("unknown stream id " + quoted(id));
  return {it->second.patches, it->second.reused};
}

int64_t ReuseStates::age(const std::string& id) const {
  ReadLock lk(mu_);
  auto it = records_.find(id);
  if (it == records_.end()) throw KeyError("unknown stream id " + quoted(id));
  return it->second.age;
}

bool ReuseStates::contains(const std::string& id) const {
  ReadLock lk(mu_);
  return records_.count(id) != 0;
}

void ReuseStates::drop(const std::string& id) {
  WriteLock lk(mu_);
  records_.erase(id);
}

std::vector<std::string> ReuseStates::ids() const {
  ReadLock lk(mu_);
  std::vector<std::string> out;
  for (const auto& kv : records_) out.push_back(kv.first);
  return out;
}

size_t ReuseStates::size() const {
  ReadLock lk(mu_);
  return records_.size();
}

int64_t ReuseStates::nbytes() const {
  ReadLock lk(mu_);
  return (int64_t)records_.size() * record_bytes_;
}

// Serialised format: the common header (serial.h) with magic "PYREUSE1", then
//   i64 L | i64 N | i64 C | i32 tok dtype | i32 kv dtype | i64 max_bytes | u64 streams, then per
//   stream: u64 id length | id | i64 age | i64 patches | i64 reused | ref | k | v | out
std::string ReuseStates::to_bytes(const std::vector<std::string>* only) const {
  if (!little_endian()) throw ValueError("ReuseStates serialisation needs a little-endian host");
  ReadLock lk(mu_);
  const auto kept = selected(records_, only);
  Writer w;
  w.put<int64_t>(L_);
  w.put<int64_t>(N_);
  w.put<int64_t>(C_);
  w.put<int32_t>((int32_t)tok_dtype_);
  w.put<int32_t>((int32_t)kv_dtype_);
  w.put<int64_t>(max_bytes_);
  w.put<uint64_t>(kept.size());
  for (const auto* kvp : kept) {
    const auto& kv = *kvp;
    const ReuseRecord& r = kv.second;
    w.put<uint64_t>(kv.first.size());
    w.bytes(kv.first.data(), kv.first.size());
    w.put<int64_t>(r.age);
    w.put<int64_t>(r.patches);
    w.put<int64_t>(r.reused);
    w.bytes(r.ref.data(), r.ref.size());
    w.bytes(r.k.data(), r.k.size());
    w.bytes(r.v.data(), r.v.size());
    w.bytes(r.out.data(), r.out.size());
  }
  return seal_blob(kMagic, kVersion, w.out);
}

ReuseStates ReuseStates::from_bytes(const char* data, size_t len) {
  const std::string who = "ReuseStates.from_bytes";
  Reader r = open_blob(data, len, kMagic, kVersion, who, "ReuseStates");
  const int64_t L = r.get<int64_t>("layers"), N = r.get<int64_t>("tokens"),
                C = r.get<int64_t>("dim");
  const int32_t td = r.get<int32_t>("dtype"), kd = r.get<int32_t>("dtype");
  const int64_t max_bytes = r.get<int64_t>("max_bytes");
  auto dt_ok = [](int32_t d) { return d >= 0 && d <= 2; };  // F32, F16, BF16
  if (L < 1 || N < 1 || C < 1 || L > (1 << 12) || N > (1 << 20) || C > (1 << 16) ||
      !dt_ok(td) || !dt_ok(kd) || max_bytes < 1)
    throw ValueError(who + ": corrupt header fields");
  ReuseStates st(L, N, C, (DType)td, (DType)kd, max_bytes);
  const uint64_t ns = r.get<uint64_t>("stream count");
  if (ns > r.left / (uint64_t)st.record_bytes_ + 1) throw ValueError(who + ": corrupt stream count");
  for (uint64_t q = 0; q < ns; ++q) {
    const uint64_t idlen = r.get<uint64_t>("stream id length");
    r.need(idlen, "stream id");
    std::string id(r.p, (size_t)idlen);
    r.p += idlen;
    r.left -= idlen;
    ReuseRecord rec;
    rec.age = r.get<int64_t>("age");
    rec.patches = r.get<int64_t>("patches");
    rec.reused = r.get<int64_t>("reused");
    for (auto* buf : {&rec.ref, &rec.k, &rec.v, &rec.out}) {
      const size_t n = (buf == &rec.k || buf == &rec.v) ? st.kv_bytes() : st.tok_bytes();
      r.need(n, "record");
      buf->resize(n);
      r.bytes(buf->data(), n, "record");
    }
    if (!st.records_.emplace(id, std::move(rec)).second)
      throw ValueError(who + ": corrupt state (stream " + quoted(id) + " appears twice)");
  }
  if (r.left != 0) throw ValueError(who + ": corrupt state (unparsed trailing payload)");
  if ((int64_t)st.records_.size() * st.record_bytes_ > max_bytes)
    throw ValueError(who + ": corrupt state (more records than max_bytes allows)");
  return st;
}

}  // namespace pystream
