// Little-endian blob helpers shared by the serialisable states (StreamStates, ReuseStates):
// an append-only writer, a bounds-checked reader, the entries to write (all or some streams),
// and the common 32-byte header
//   magic (8) | u32 version | u32 header size (32) | u64 payload size | u32 CRC-32 | u32 0
#pragma once
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "common.h"

namespace pystream {

uint32_t crc32(const void* data, size_t len, uint32_t crc = 0);

inline bool little_endian() {
  const uint16_t v = 1;
  uint8_t b;
  std::memcpy(&b, &v, 1);
  return b == 1;
}

constexpr size_t kBlobHeader = 32;

struct Writer {
  std::string out;
  template <typename T>
  void put(T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void bytes(const void* p, size_t n) {
    if (n) out.append(static_cast<const char*>(p), n);
  }
};

struct Reader {
  const char* p;
  size_t left;
  std::string who = "from_bytes";  // prefix of error messages, e.g. "StreamStates.from_bytes"
  void need(size_t n, const char* what) {
    if (n > left) throw ValueError(who + ": corrupt state (" + what + " runs past the end)");
  }
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p, sizeof(T));
    p += sizeof(T);
    left -= sizeof(T);
    return v;
  }
  void bytes(void* dst, size_t n, const char* what) {
    need(n, what);
    if (n) std::memcpy(dst, p, n);
    p += n;
    left -= n;
  }
};

// header + payload, the payload checksummed.
inline std::string seal_blob(const char magic[8], uint32_t version, const std::string& payload) {
  Writer h;
  h.bytes(magic, 8);
  h.put<uint32_t>(version);
  h.put<uint32_t>((uint32_t)kBlobHeader);
  h.put<uint64_t>(payload.size());
  h.put<uint32_t>(crc32(payload.data(), payload.size()));
  h.put<uint32_t>(0);
  return h.out + payload;
}

// Checks the header of a sealed blob; returns a reader over its payload. `who` names the
// caller in errors ("ReuseStates.from_bytes: checksum mismatch ...").
inline Reader open_blob(const char* data, size_t len, const char magic[8], uint32_t version,
                        const std::string& who, const char* kind) {
  const std::string pre = who + ": ";
  if (!little_endian()) throw ValueError(pre + "needs a little-endian host");
  if (len < kBlobHeader)
    throw ValueError(pre + "truncated input (" + std::to_string(len) +
                     " bytes, the header alone is 32)");
  if (std::memcmp(data, magic, 8) != 0)
    throw ValueError(pre + "not a " + kind + " blob (bad magic)");
  Reader hr{data + 8, kBlobHeader - 8, who};
  const uint32_t ver = hr.get<uint32_t>("version");
  const uint32_t hsize = hr.get<uint32_t>("header size");
  const uint64_t psize = hr.get<uint64_t>("payload size");
  const uint32_t crc = hr.get<uint32_t>("checksum");
  if (ver != version)
    throw ValueError(pre + "unsupported format version " + std::to_string(ver) +
                     " (this build reads version " + std::to_string(version) + ")");
  if (hsize != kBlobHeader) throw ValueError(pre + "corrupt header (bad header size)");
  if (psize != len - kBlobHeader)
    throw ValueError(pre + (psize > len - kBlobHeader ? "truncated input" : "trailing bytes") +
                     " (header says " + std::to_string(psize) + " payload bytes, got " +
                     std::to_string(len - kBlobHeader) + ")");
  if (crc32(data + kBlobHeader, psize) != crc)
    throw ValueError(pre + "checksum mismatch (corrupt state)");
  return Reader{data + kBlobHeader, (size_t)psize, who};
}

// The entries of an id -> value map to serialise: all of them (only == nullptr), or those whose
// id is in `only`, in the map's order either way.
template <class Map>
std::vector<const typename Map::value_type*> selected(const Map& m,
                                                      const std::vector<std::string>* only) {
  std::vector<const typename Map::value_type*> out;
  if (only == nullptr) {
    for (const auto& kv : m) out.push_back(&kv);
    return out;
  }
  const std::set<std::string> want(only->begin(), only->end());
  for (const auto& kv : m)
    if (want.count(kv.first)) out.push_back(&kv);
  return out;
}

}  // namespace pystream
