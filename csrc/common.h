// Shared by the C++ and CUDA sources: dtypes, float16/bfloat16 conversions, error types.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__CUDACC__)
#define PS_HD __host__ __device__ __forceinline__
#else
#define PS_HD inline
#endif

namespace pystream {

// Errors thrown by the core; bindings.cpp maps them to the Python exception of the same name.
struct ValueError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct TypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct KeyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct MemoryError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class DType : int32_t { F32 = 0, F16 = 1, BF16 = 2, I64 = 3, F64 = 4, I32 = 5, U8 = 6 };

// Token storage types of the carried states.
inline bool float_dtype(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }

inline std::string quoted(const std::string& id) { return "'" + id + "'"; }

inline size_t dtype_size(DType d) {
  switch (d) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I64: return 8;
    case DType::F64: return 8;
    case DType::I32: return 4;
    case DType::U8: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "torch.float32";
    case DType::F16: return "torch.float16";
    case DType::BF16: return "torch.bfloat16";
    case DType::I64: return "torch.int64";
    case DType::F64: return "torch.float64";
    case DType::I32: return "torch.int32";
    case DType::U8: return "torch.uint8";
  }
  return "unknown";
}

// 16-bit float storage types. Arithmetic always happens in fp32.
struct half_t {
  uint16_t bits;
};
struct bf16_t {
  uint16_t bits;
};

PS_HD uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
PS_HD float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// IEEE binary16 -> binary32 (exact).
PS_HD float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t em = h & 0x7FFFu;
  uint32_t out;
  if (em >= 0x7C00u) {
    out = 0x7F800000u | ((em & 0x3FFu) << 13);  // inf / nan
  } else if (em >= 0x0400u) {
    out = (em << 13) + 0x38000000u;  // normal: rebias exponent by 127 - 15 = 112
  } else {
    out = f32_bits((float)em * 5.9604644775390625e-8f);  // subnormal or zero: em * 2^-24
  }
  return bits_f32(out | sign);
}

// binary32 -> binary16, round to nearest even (what torch's .to(torch.float16) does).
PS_HD uint16_t float_to_half(float f) {
  uint32_t x = f32_bits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x7F800000u) {  // inf or nan (keep nan quiet)
    return (uint16_t)(sign | 0x7C00u | (ax > 0x7F800000u ? (0x200u | ((ax >> 13) & 0x3FFu)) : 0u));
  }
  if (ax >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);  // rounds to inf
  if (ax < 0x38800000u) {
    // Below the smallest normal half: adding 0.5f rounds (RNE) to a multiple of 2^-24, whose
    // low mantissa bits are then the half subnormal (a carry gives the smallest normal).
    float af = bits_f32(ax) + 0.5f;
    return (uint16_t)(sign | (f32_bits(af) - 0x3F000000u));
  }
  uint32_t odd = (ax >> 13) & 1u;
  ax += 0xC8000FFFu + odd;  // rebias exponent (-112 << 23) and round to nearest even
  return (uint16_t)(sign | (ax >> 13));
}

PS_HD float bf16_to_float(uint16_t b) { return bits_f32((uint32_t)b << 16); }

PS_HD uint16_t float_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);  // quiet nan
  u += 0x7FFFu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

PS_HD float to_f32(float v) { return v; }
PS_HD float to_f32(half_t v) { return half_to_float(v.bits); }
PS_HD float to_f32(bf16_t v) { return bf16_to_float(v.bits); }

template <typename T>
struct FromF32;
template <>
struct FromF32<float> {
  static PS_HD float conv(float v) { return v; }
};
template <>
struct FromF32<half_t> {
  static PS_HD half_t conv(float v) { return half_t{float_to_half(v)}; }
};
template <>
struct FromF32<bf16_t> {
  static PS_HD bf16_t conv(float v) { return bf16_t{float_to_bf16(v)}; }
};
template <typename T>
PS_HD T from_f32(float v) {
  return FromF32<T>::conv(v);
}

}  // namespace pystream
