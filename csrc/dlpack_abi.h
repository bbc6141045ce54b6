// Minimal declarations of the DLPack ABI (https://github.com/dmlc/dlpack, v0.8 "legacy" layout).
// Written out here so the module depends on nothing but pybind11; the layout is a stable ABI.
#pragma once
#include <cstdint>

extern "C" {

enum PsDLDeviceType : int32_t {
  kPsDLCPU = 1,
  kPsDLCUDA = 2,
  kPsDLCUDAHost = 3,
};

struct PsDLDevice {
  int32_t device_type;
  int32_t device_id;
};

enum PsDLDataTypeCode : uint8_t {
  kPsDLInt = 0,
  kPsDLUInt = 1,
  kPsDLFloat = 2,
  kPsDLBfloat = 4,
  kPsDLBool = 6,
};

struct PsDLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};

struct PsDLTensor {
  void* data;
  PsDLDevice device;
  int32_t ndim;
  PsDLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; NULL means compact row-major
  uint64_t byte_offset;
};

struct PsDLManagedTensor {
  PsDLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(PsDLManagedTensor* self);
};

}  // extern "C"
