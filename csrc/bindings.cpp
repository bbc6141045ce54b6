// pybind11 module pystream._core. Tensors cross through DLPack (no libtorch): inputs are any
// object with __dlpack__ (or a "dltensor" capsule); outputs are filled in place (the Python
// wrapper allocates them with torch) or handed back as DLPack capsules of C++-owned buffers.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core.h"
#include "dlpack_abi.h"
#include "reuse_states.h"
#include "stream_states.h"

#ifndef PYSTREAM_VERSION
#define PYSTREAM_VERSION "0.0.0"
#endif

namespace py = pybind11;
using namespace pystream;

namespace {

// ------------------------------------------------------------------------------------------
// DLPack in

struct TensorArg {
  PsDLManagedTensor* mt = nullptr;
  std::string name;
  char* data = nullptr;
  int ndim = 0;
  std::vector<int64_t> shape;
  bool dtype_known = false;
  DType dtype = DType::F32;
  int dev_type = kPsDLCPU;
  int dev_id = 0;
  bool contiguous = true;

  TensorArg() = default;
  TensorArg(const TensorArg&) = delete;
  TensorArg& operator=(const TensorArg&) = delete;
  TensorArg(TensorArg&& o) noexcept { *this = std::move(o); }
  TensorArg& operator=(TensorArg&& o) noexcept {
    std::swap(mt, o.mt);
    name = std::move(o.name);
    data = o.data;
    ndim = o.ndim;
    shape = std::move(o.shape);
    dtype_known = o.dtype_known;
    dtype = o.dtype;
    dev_type = o.dev_type;
    dev_id = o.dev_id;
    contiguous = o.contiguous;
    return *this;
  }
  ~TensorArg() {
    if (mt && mt->deleter) mt->deleter(mt);
  }

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  bool is_cuda() const { return dev_type == kPsDLCUDA; }
  std::string shape_str() const {
    std::ostringstream os;
    os << "(";
    for (size_t k = 0; k < shape.size(); ++k) os << (k ? ", " : "") << shape[k];
    os << (shape.size() == 1 ? ",)" : ")");
    return os.str();
  }
  std::string dtype_str() const {
    return dtype_known ? dtype_name(dtype) : std::string("an unsupported dtype");
  }
  std::string device_str() const {
    if (dev_type == kPsDLCPU) return "cpu";
    if (dev_type == kPsDLCUDA) return "cuda:" + std::to_string(dev_id);
    return "device type " + std::to_string(dev_type);
  }
  void require_contiguous() const {
    if (!contiguous)
      throw ValueError(name + " must be contiguous (call .contiguous() first); pystream._core "
                              "does not copy silently");
  }
  void require_dtype(DType d) const {
    if (!dtype_known || dtype != d)
      throw ValueError(name + " must be " + std::string(dtype_name(d)).substr(6) + ", got " +
                       dtype_str());
  }
  void require_shape(const std::vector<int64_t>& want) const {
    if (shape != want) {
      TensorArg tmp;
      tmp.shape = want;
      throw ValueError(name + " must have shape " + tmp.shape_str() + ", got " + shape_str());
    }
  }
  void require_cpu() const {
    if (dev_type != kPsDLCPU) throw ValueError(name + " must be on the CPU, got " + device_str());
  }
  void require_same_device(const TensorArg& o) const {
    if (dev_type != o.dev_type || (dev_type == kPsDLCUDA && dev_id != o.dev_id))
      throw ValueError("all tensors must be on one device, got " + o.device_str() + " (" +
                       o.name + ") and " + device_str() + " (" + name + ")");
  }
};

bool map_dtype(PsDLDataType t, DType* out) {
  if (t.lanes != 1) return false;
  if (t.code == kPsDLFloat && t.bits == 32) *out = DType::F32;
  else if (t.code == kPsDLFloat && t.bits == 16) *out = DType::F16;
  else if (t.code == kPsDLBfloat && t.bits == 16) *out = DType::BF16;
  else if (t.code == kPsDLFloat && t.bits == 64) *out = DType::F64;
  else if (t.code == kPsDLInt && t.bits == 64) *out = DType::I64;
  else if (t.code == kPsDLInt && t.bits == 32) *out = DType::I32;
  else if (t.code == kPsDLUInt && t.bits == 8) *out = DType::U8;
  else return false;
  return true;
}

TensorArg from_py(py::handle obj, const std::string& name) {
  py::object cap;
  if (PyCapsule_CheckExact(obj.ptr())) {
    cap = py::reinterpret_borrow<py::object>(obj);
  } else if (py::hasattr(obj, "__dlpack__")) {
    cap = obj.attr("__dlpack__")();
  } else {
    throw TypeError(name + " must be a tensor (an object with __dlpack__), got " +
                    std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  }
  if (!PyCapsule_IsValid(cap.ptr(), "dltensor"))
    throw TypeError(name + ": expected an unused DLPack capsule named 'dltensor'");
  auto* mt = static_cast<PsDLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"));
  if (!mt) throw py::error_already_set();
  if (PyCapsule_SetName(cap.ptr(), "used_dltensor") != 0) throw py::error_already_set();
  TensorArg a;
  a.mt = mt;
  a.name = name;
  const PsDLTensor& t = mt->dl_tensor;
  a.data = static_cast<char*>(t.data) + t.byte_offset;
  a.ndim = t.ndim;
  a.shape.assign(t.shape, t.shape + t.ndim);
  a.dtype_known = map_dtype(t.dtype, &a.dtype);
  a.dev_type = t.device.device_type;
  a.dev_id = t.device.device_id;
  if (a.dev_type != kPsDLCPU && a.dev_type != kPsDLCUDA)
    throw ValueError(name + " lives on DLPack device type " + std::to_string(a.dev_type) +
                     "; only CPU and CUDA tensors are supported");
  if (t.strides && a.numel() > 0) {
    int64_t expect = 1;
    for (int d = t.ndim - 1; d >= 0; --d) {
      if (t.shape[d] != 1 && t.strides[d] != expect) {
        a.contiguous = false;
        break;
      }
      expect *= t.shape[d];
    }
  }
  return a;
}

// ------------------------------------------------------------------------------------------
// DLPack out (C++-owned host buffers, zero copy)

struct ExportCtx {
  std::vector<uint8_t> buf;
  std::vector<int64_t> shape;
  PsDLManagedTensor mt;
};

void export_deleter(PsDLManagedTensor* mt) { delete static_cast<ExportCtx*>(mt->manager_ctx); }

void capsule_destructor(PyObject* cap) {
  if (PyCapsule_IsValid(cap, "dltensor")) {  // never consumed
    auto* mt = static_cast<PsDLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
    if (mt && mt->deleter) mt->deleter(mt);
  }
}

PsDLDataType dl_type(DType d) {
  switch (d) {
    case DType::F32: return {kPsDLFloat, 32, 1};
    case DType::F16: return {kPsDLFloat, 16, 1};
    case DType::BF16: return {kPsDLBfloat, 16, 1};
    case DType::F64: return {kPsDLFloat, 64, 1};
    case DType::I64: return {kPsDLInt, 64, 1};
    case DType::I32: return {kPsDLInt, 32, 1};
    case DType::U8: return {kPsDLUInt, 8, 1};
  }
  return {kPsDLFloat, 32, 1};
}

py::capsule to_capsule(HostArray&& a) {
  auto* ctx = new ExportCtx();
  ctx->buf = std::move(a.data);
  ctx->shape = std::move(a.shape);
  PsDLTensor& t = ctx->mt.dl_tensor;
  t.data = ctx->buf.data();
  t.device = {kPsDLCPU, 0};
  t.ndim = (int32_t)ctx->shape.size();
  t.dtype = dl_type(a.dtype);
  t.shape = ctx->shape.data();
  t.strides = nullptr;
  t.byte_offset = 0;
  ctx->mt.manager_ctx = ctx;
  ctx->mt.deleter = export_deleter;
  PyObject* cap = PyCapsule_New(&ctx->mt, "dltensor", capsule_destructor);
  if (!cap) {
    delete ctx;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::capsule>(cap);
}

py::tuple window_tuple(WindowBatch&& w, bool batched) {
  if (batched)
    return py::make_tuple(to_capsule(std::move(w.tokens)), to_capsule(std::move(w.sizes)),
                          to_capsule(std::move(w.frames)), to_capsule(std::move(w.times)),
                          to_capsule(std::move(w.lengths)),
                          to_capsule(std::move(w.chunk_lengths)));
  return py::make_tuple(to_capsule(std::move(w.tokens)), to_capsule(std::move(w.sizes)),
                        to_capsule(std::move(w.frames)), to_capsule(std::move(w.times)),
                        to_capsule(std::move(w.chunk_lengths)));
}

// ------------------------------------------------------------------------------------------
// merge

// r (int or int64 tensor [B] / scalar) and lengths (None or int64 tensor [B]) -> host vectors,
// validated exactly like merge_reference.check_merge_args (ValueError).
void lengths_and_r(int64_t B, int64_t N, int64_t P, py::handle r_obj, py::handle len_obj,
                   std::vector<int64_t>& len, std::vector<int64_t>& r) {
  if (P < 0) throw ValueError("protected must be >= 0, got " + std::to_string(P));
  len.assign(B, N);
  if (!len_obj.is_none()) {
    TensorArg l = from_py(len_obj, "lengths");
    l.require_cpu();
    l.require_dtype(DType::I64);
    l.require_contiguous();
    if (l.shape != std::vector<int64_t>{B})
      throw ValueError("lengths must have shape [" + std::to_string(B) + "], got " + l.shape_str());
    const int64_t* p = reinterpret_cast<const int64_t*>(l.data);
    for (int64_t b = 0; b < B; ++b) {
      if (p[b] < 0 || p[b] > N) throw ValueError("lengths must lie in [0, " + std::to_string(N) + "]");
      len[b] = p[b];
    }
  }
  if (PyLong_Check(r_obj.ptr())) {
    r.assign(B, r_obj.cast<int64_t>());
  } else {
    TensorArg rt = from_py(r_obj, "r");
    rt.require_cpu();
    rt.require_dtype(DType::I64);
    rt.require_contiguous();
    const int64_t* p = reinterpret_cast<const int64_t*>(rt.data);
    if (rt.ndim == 0) {
      r.assign(B, p[0]);
    } else if (rt.shape == std::vector<int64_t>{B}) {
      r.assign(p, p + B);
    } else {
      throw ValueError("r must be an int or have shape [" + std::to_string(B) + "], got " +
                       rt.shape_str());
    }
  }
  for (int64_t b = 0; b < B; ++b)
    if (r[b] < 0) throw ValueError("r must be >= 0");
  for (int64_t b = 0; b < B; ++b)
    if (len[b] < P)
      throw ValueError("row " + std::to_string(b) + " has " + std::to_string(len[b]) +
                       " tokens, fewer than protected=" + std::to_string(P));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t r_max = (len[b] - P) / 2;
    if (r[b] > r_max)
      throw ValueError("r=" + std::to_string(r[b]) + " in row " + std::to_string(b) +
                       " is above the maximum " + std::to_string(r_max) + " (" +
                       std::to_string(len[b]) + " tokens, " + std::to_string(P) + " protected)");
  }
}

int64_t out_len_max(const std::vector<int64_t>& len, const std::vector<int64_t>& r) {
  int64_t M = 0;
  for (size_t b = 0; b < len.size(); ++b) M = std::max(M, len[b] - r[b]);
  return M;
}

int64_t py_merge_out_tokens(int64_t B, int64_t N, int64_t P, py::handle r, py::handle lengths) {
  std::vector<int64_t> len, rr;
  lengths_and_r(B, N, P, r, lengths, len, rr);
  return out_len_max(len, rr);
}

void check_token_dtype(const TensorArg& t) {
  if (!t.dtype_known ||
      (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16))
    throw ValueError(t.name + " must be float32, float16 or bfloat16, got " + t.dtype_str());
}

void py_bipartite_merge(py::handle x_o, py::handle sizes_o, py::handle metric_o, py::handle r_o,
                        int64_t P, py::handle len_o, py::handle xo_o, py::handle so_o,
                        py::handle im_o, py::handle lo_o, uintptr_t stream,
                        bool check_finite) {
  TensorArg x = from_py(x_o, "tokens");
  if (x.ndim != 3)
    throw ValueError("tokens must have shape [B, N, C], got rank " + std::to_string(x.ndim));
  const int64_t B = x.shape[0], N = x.shape[1], C = x.shape[2];
  TensorArg sizes = from_py(sizes_o, "sizes");
  if (sizes.ndim != 2 || sizes.shape[0] != B || sizes.shape[1] != N)
    throw ValueError("sizes must have shape [" + std::to_string(B) + ", " + std::to_string(N) +
                     "], got " + sizes.shape_str());
  TensorArg metric = from_py(metric_o, "metric");
  if (metric.ndim != 3 || metric.shape[0] != B || metric.shape[1] != N)
    throw ValueError("metric must have shape [" + std::to_string(B) + ", " + std::to_string(N) +
                     ", Cm], got " + metric.shape_str());
  check_token_dtype(x);
  check_token_dtype(metric);
  sizes.require_dtype(DType::F32);
  x.require_same_device(sizes);
  x.require_same_device(metric);
  if (N >= (int64_t(1) << 30)) throw ValueError("too many tokens per row");
  std::vector<int64_t> len, r;
  lengths_and_r(B, N, P, r_o, len_o, len, r);
  x.require_contiguous();
  sizes.require_contiguous();
  metric.require_contiguous();

  const int64_t M_need = B ? out_len_max(len, r) : 0;
  TensorArg xo = from_py(xo_o, "x_out");
  if (xo.ndim != 3 || xo.shape[0] != B || xo.shape[2] != C || xo.shape[1] < M_need)
    throw ValueError("x_out must have shape [" + std::to_string(B) + ", >=" +
                     std::to_string(M_need) + ", " + std::to_string(C) + "], got " + xo.shape_str());
  const int64_t M = xo.shape[1];
  if (!xo.dtype_known || xo.dtype != x.dtype)
    throw ValueError("x_out must have the tokens' dtype " + std::string(dtype_name(x.dtype)));
  TensorArg so = from_py(so_o, "sizes_out");
  so.require_shape({B, M});
  so.require_dtype(DType::F32);
  TensorArg im = from_py(im_o, "index_map");
  im.require_shape({B, N});
  im.require_dtype(DType::I64);
  TensorArg lo = from_py(lo_o, "lengths_out");
  lo.require_shape({B});
  lo.require_dtype(DType::I64);
  for (TensorArg* t : {&xo, &so, &im, &lo}) {
    x.require_same_device(*t);
    t->require_contiguous();
  }

  MergeArgs a;
  a.x_dtype = x.dtype;
  a.m_dtype = metric.dtype;
  a.x = x.data;
  a.sizes = reinterpret_cast<const float*>(sizes.data);
  a.metric = metric.data;
  a.B = B;
  a.N = N;
  a.C = C;
  a.Cm = metric.shape[2];
  a.M = M;
  a.P = P;
  a.lengths = len.data();
  a.r = r.data();
  a.x_out = xo.data;
  a.sizes_out = reinterpret_cast<float*>(so.data);
  a.index_map = reinterpret_cast<int64_t*>(im.data);
  a.lengths_out = reinterpret_cast<int64_t*>(lo.data);
  a.device_id = x.dev_id;
  a.stream = reinterpret_cast<void*>(stream);
  a.check_finite = check_finite;
  {
    py::gil_scoped_release nogil;
    if (x.is_cuda()) merge_cuda(a);
    else merge_cpu(a);
  }
}

void py_merge_spans(py::handle spans_o, py::handle im_o, py::handle out_o, uintptr_t stream) {
  TensorArg sp = from_py(spans_o, "spans");
  if (sp.ndim != 3 || sp.shape[2] != 2)
    throw ValueError("spans must have shape [B, N, 2], got " + sp.shape_str());
  const int64_t B = sp.shape[0], N = sp.shape[1];
  if (!sp.dtype_known || (sp.dtype != DType::I64 && sp.dtype != DType::F64))
    throw ValueError("spans must be int64 or float64, got " + sp.dtype_str());
  TensorArg im = from_py(im_o, "index_map");
  im.require_shape({B, N});
  im.require_dtype(DType::I64);
  TensorArg out = from_py(out_o, "out");
  if (out.ndim != 3 || out.shape[0] != B || out.shape[2] != 2)
    throw ValueError("out must have shape [" + std::to_string(B) + ", M, 2], got " +
                     out.shape_str());
  out.require_dtype(sp.dtype);
  for (TensorArg* t : {&sp, &im, &out}) {
    t->require_contiguous();
    sp.require_same_device(*t);
  }
  SpanArgs a;
  a.dtype = sp.dtype;
  a.spans = sp.data;
  a.index_map = reinterpret_cast<const int64_t*>(im.data);
  a.out = out.data;
  a.B = B;
  a.N = N;
  a.M = out.shape[1];
  a.device_id = sp.dev_id;
  a.stream = reinterpret_cast<void*>(stream);
  {
    py::gil_scoped_release nogil;
    if (sp.is_cuda()) spans_cuda(a);
    else spans_cpu(a);
  }
}

// ------------------------------------------------------------------------------------------
// StreamStates

void py_push(StreamStates& st, const std::string& id, py::handle tok_o, py::handle sizes_o,
             py::handle frames_o, py::handle times_o, int64_t seq) {
  TensorArg tok = from_py(tok_o, "tokens");
  if (tok.ndim != 2) throw ValueError("tokens must have shape [n, C], got " + tok.shape_str());
  check_token_dtype(tok);
  const int64_t n = tok.shape[0], C = tok.shape[1];
  TensorArg sz = from_py(sizes_o, "sizes");
  sz.require_shape({n});
  sz.require_dtype(DType::F32);
  TensorArg fr = from_py(frames_o, "frames");
  fr.require_shape({n, 2});
  fr.require_dtype(DType::I64);
  TensorArg tm = from_py(times_o, "times");
  tm.require_shape({n, 2});
  tm.require_dtype(DType::F64);
  for (TensorArg* t : {&tok, &sz, &fr, &tm}) {
    t->require_cpu();
    t->require_contiguous();
  }
  py::gil_scoped_release nogil;
  st.push(id, tok.dtype, tok.data, n, C, reinterpret_cast<const float*>(sz.data),
          reinterpret_cast<const int64_t*>(fr.data), reinterpret_cast<const double*>(tm.data),
          seq);
}

// to_bytes / from_bytes of a serialisable state (StreamStates, ReuseStates), GIL released.
// `streams`: serialise only these (a checkpoint keeps just the streams that resume); None: all.
template <class State>
py::bytes state_to_bytes(const State& st, std::optional<std::vector<std::string>> streams) {
  std::string out;
  {
    py::gil_scoped_release nogil;
    out = st.to_bytes(streams ? &*streams : nullptr);
  }
  return py::bytes(out);
}

template <class State>
State state_from_bytes(py::bytes b) {
  char* buf = nullptr;
  Py_ssize_t len = 0;
  if (PyBytes_AsStringAndSize(b.ptr(), &buf, &len) != 0) throw py::error_already_set();
  return State::from_bytes(buf, (size_t)len);
}

// ------------------------------------------------------------------------------------------
// ReuseStates

DType parse_float_dtype(std::string name) {
  if (name.rfind("torch.", 0) == 0) name = name.substr(6);
  if (name == "float32" || name == "float") return DType::F32;
  if (name == "float16" || name == "half") return DType::F16;
  if (name == "bfloat16") return DType::BF16;
  throw ValueError("dtype must be float32, float16 or bfloat16, got '" + name + "'");
}

// age / patches / reused: int64 [S] on the CPU.
void check_counters(int64_t S, std::initializer_list<TensorArg*> args) {
  for (TensorArg* t : args) {
    t->require_shape({S});
    t->require_dtype(DType::I64);
    t->require_cpu();
    t->require_contiguous();
  }
}

py::tuple py_reuse_gather(const ReuseStates& st, const std::vector<std::string>& ids) {
  ReuseBatch b;
  {
    py::gil_scoped_release nogil;
    b = st.gather(ids);
  }
  return py::make_tuple(to_capsule(std::move(b.ref)), to_capsule(std::move(b.k)),
                        to_capsule(std::move(b.v)), to_capsule(std::move(b.out)),
                        to_capsule(std::move(b.age)));
}

void py_reuse_put(ReuseStates& st, const std::vector<std::string>& ids, py::handle ref_o,
                  py::handle k_o, py::handle v_o, py::handle out_o, py::handle age_o,
                  py::handle patches_o, py::handle reused_o) {
  const int64_t S = (int64_t)ids.size(), L = st.layers(), N = st.tokens(), C = st.dim();
  TensorArg ref = from_py(ref_o, "ref"), k = from_py(k_o, "k"), v = from_py(v_o, "v"),
            out = from_py(out_o, "out"), age = from_py(age_o, "age"),
            patches = from_py(patches_o, "patches"), reused = from_py(reused_o, "reused");
  for (TensorArg* t : {&ref, &out}) {
    t->require_shape({S, N, C});
    t->require_dtype(st.tok_dtype());
  }
  for (TensorArg* t : {&k, &v}) {
    t->require_shape({S, L, N, C});
    t->require_dtype(st.kv_dtype());
  }
  for (TensorArg* t : {&ref, &k, &v, &out}) {
    t->require_cpu();
    t->require_contiguous();
  }
  check_counters(S, {&age, &patches, &reused});
  py::gil_scoped_release nogil;
  st.put(ids, ref.data, k.data, v.data, out.data, reinterpret_cast<const int64_t*>(age.data),
         reinterpret_cast<const int64_t*>(patches.data),
         reinterpret_cast<const int64_t*>(reused.data));
}

void py_reuse_advance(ReuseStates& st, const std::vector<std::string>& ids, py::handle age_o,
                      py::handle patches_o, py::handle reused_o) {
  const int64_t S = (int64_t)ids.size();
  TensorArg age = from_py(age_o, "age"), patches = from_py(patches_o, "patches"),
            reused = from_py(reused_o, "reused");
  check_counters(S, {&age, &patches, &reused});
  py::gil_scoped_release nogil;
  st.advance(ids, reinterpret_cast<const int64_t*>(age.data),
             reinterpret_cast<const int64_t*>(patches.data),
             reinterpret_cast<const int64_t*>(reused.data));
}

std::string build_info_str() {
  std::ostringstream os;
  os << "pystream._core " << PYSTREAM_VERSION;
#ifdef _OPENMP
  os << ", openmp on (" << omp_get_max_threads() << " threads)";
#else
  os << ", openmp off";
#endif
  os << ", cuda " << (cuda_compiled() ? "compiled" : "not compiled");
  return os.str();
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "pystream C++/CUDA core: batched bipartite token merging, span union and carried "
            "per-stream state. Tensors cross through DLPack; see pystream/merge.py for the "
            "torch-facing API.";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const pystream::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const pystream::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const pystream::KeyError& e) {
      PyErr_SetObject(PyExc_KeyError, py::str(e.what()).ptr());
    } catch (const pystream::MemoryError& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });

  m.attr("__version__") = PYSTREAM_VERSION;

  m.def("build_info", []() {
    py::dict d;
    d["version"] = PYSTREAM_VERSION;
#ifdef _OPENMP
    d["openmp"] = true;
    d["omp_max_threads"] = omp_get_max_threads();
#else
    d["openmp"] = false;
    d["omp_max_threads"] = 1;
#endif
    d["cuda_compiled"] = cuda_compiled();
    d["cuda"] = cuda_build_info();
#ifdef PYSTREAM_CUDA_ARCHS
    d["cuda_archs"] = PYSTREAM_CUDA_ARCHS;
#endif
    d["summary"] = build_info_str();
    return d;
  }, "Build facts: version, openmp (bool), cuda_compiled (bool), summary (str).");

  m.def("cuda_available", []() { return cuda_compiled() && cuda_device_available(); },
        "True when CUDA kernels were compiled and a CUDA device is present now.");

  m.def("merge_out_tokens", &py_merge_out_tokens, py::arg("B"), py::arg("N"),
        py::arg("protected_"), py::arg("r"), py::arg("lengths"),
        "Validate r / lengths like the reference and return the padded output length M.");

  m.def("bipartite_merge", &py_bipartite_merge, py::arg("x"), py::arg("sizes"),
        py::arg("metric"), py::arg("r"), py::arg("protected_"), py::arg("lengths"),
        py::arg("x_out"), py::arg("sizes_out"), py::arg("index_map"), py::arg("lengths_out"),
        py::arg("stream") = 0, py::arg("check_finite") = true,
        "One batched merge step, filling x_out [B,M,C], sizes_out [B,M], index_map [B,N] and "
        "lengths_out [B] in place (CPU or CUDA, by the tensors' device). r: int or CPU int64 "
        "[B]; lengths: None or CPU int64 [B]. stream: cudaStream_t as int (CUDA only). "
        "check_finite=False skips reading back the CUDA NaN/inf flag (no stream sync); the "
        "CPU always checks.");

  m.def("merge_spans", &py_merge_spans, py::arg("spans"), py::arg("index_map"), py::arg("out"),
        py::arg("stream") = 0,
        "Span union under an index map: out[B,M,2] <- min starts / max ends (int64 or float64).");

  py::class_<StreamStates>(m, "StreamStates",
                           "Carried per-stream chunks (tokens, sizes, frames, times), owned by "
                           "C++. window()/windows() return DLPack capsules of fresh C++-owned "
                           "buffers (torch.from_dlpack them; zero copy).")
      .def(py::init<int64_t, int64_t>(), py::arg("max_chunks"), py::arg("max_bytes"))
      .def("push", &py_push, py::arg("stream_id"), py::arg("tokens"), py::arg("sizes"),
           py::arg("frames"), py::arg("times"), py::arg("seq"))
      .def("window",
           [](const StreamStates& s, const std::string& id) {
             WindowBatch w;
             {
               py::gil_scoped_release nogil;
               w = s.window(id);
             }
             return window_tuple(std::move(w), false);
           },
           py::arg("stream_id"),
           "-> capsules (tokens [T,C], sizes [T], frames [T,2], times [T,2], chunk_lengths [k])")
      .def("windows",
           [](const StreamStates& s, const std::vector<std::string>& ids) {
             WindowBatch w;
             {
               py::gil_scoped_release nogil;
               w = s.windows(ids);
             }
             return window_tuple(std::move(w), true);
           },
           py::arg("stream_ids"),
           "-> capsules (tokens [S,Nmax,C], sizes [S,Nmax], frames [S,Nmax,2], "
           "times [S,Nmax,2], lengths [S], chunk_lengths [S,Kmax]), zero padded")
      .def("num_chunks", [](const StreamStates& s, const std::string& id) {
        return s.num_chunks(id);
      }, py::arg("stream_id"))
      .def("last_seq", [](const StreamStates& s, const std::string& id) {
        return s.last_seq(id);
      }, py::arg("stream_id"))
      .def("token_dim", [](const StreamStates& s, const std::string& id) {
        return s.token_dim(id);
      }, py::arg("stream_id"))
      .def("dtype", [](const StreamStates& s, const std::string& id) {
        return std::string(dtype_name(s.dtype(id)));
      }, py::arg("stream_id"))
      .def("streams", &StreamStates::ids)
      .def("drop", &StreamStates::drop, py::arg("stream_id"))
      .def_property_readonly("nbytes", &StreamStates::nbytes)
      .def_property_readonly("max_chunks", &StreamStates::max_chunks)
      .def_property_readonly("max_bytes", &StreamStates::max_bytes)
      .def("__len__", &StreamStates::size)
      .def("__contains__", [](const StreamStates& s, py::handle id) {
        return py::isinstance<py::str>(id) && s.contains(id.cast<std::string>());
      })
      .def("to_bytes", &state_to_bytes<StreamStates>, py::arg("streams") = py::none())
      .def_static("from_bytes", &state_from_bytes<StreamStates>, py::arg("data"))
      .def(py::pickle(
          [](const StreamStates& s) { return py::bytes(s.to_bytes()); },
          [](py::bytes b) {
            std::string str = b;
            return StreamStates::from_bytes(str.data(), str.size());
          }))
      .def("__repr__", [](const StreamStates& s) {
        return "<pystream._core.StreamStates streams=" + std::to_string(s.size()) +
               " nbytes=" + std::to_string(s.nbytes()) + " max_chunks=" +
               std::to_string(s.max_chunks()) + " max_bytes=" + std::to_string(s.max_bytes()) +
               ">";
      });

  py::class_<ReuseStates>(m, "ReuseStates",
                          "Static-patch reuse caches, one fixed-size record per stream (ref and "
                          "out [N,C], k and v [L,N,C], age, counters), owned by C++ and bounded "
                          "by max_bytes. gather() returns DLPack capsules of fresh buffers.")
      .def(py::init([](int64_t layers, int64_t tokens, int64_t dim, const std::string& tok_dtype,
                       const std::string& kv_dtype, int64_t max_bytes) {
             return ReuseStates(layers, tokens, dim, parse_float_dtype(tok_dtype),
                                parse_float_dtype(kv_dtype), max_bytes);
           }),
           py::arg("layers"), py::arg("tokens"), py::arg("dim"), py::arg("tok_dtype"),
           py::arg("kv_dtype"), py::arg("max_bytes"))
      .def("gather", &py_reuse_gather, py::arg("stream_ids"),
           "-> capsules (ref [S,N,C], k [S,L,N,C], v [S,L,N,C], out [S,N,C], age [S]); "
           "zeros and age -1 for a stream without a record")
      .def("put", &py_reuse_put, py::arg("stream_ids"), py::arg("ref"), py::arg("k"),
           py::arg("v"), py::arg("out"), py::arg("age"), py::arg("patches"), py::arg("reused"))
      .def("advance", &py_reuse_advance, py::arg("stream_ids"), py::arg("age"),
           py::arg("patches"), py::arg("reused"),
           "new ages and counter increments for existing records; cached values unchanged")
      .def("counts", &ReuseStates::counts, py::arg("stream_id"))
      .def("age", &ReuseStates::age, py::arg("stream_id"))
      .def("drop", &ReuseStates::drop, py::arg("stream_id"))
      .def("streams", &ReuseStates::ids)
      .def_property_readonly("nbytes", &ReuseStates::nbytes)
      .def_property_readonly("record_bytes", &ReuseStates::record_bytes)
      .def_property_readonly("max_bytes", &ReuseStates::max_bytes)
      .def_property_readonly("shape", [](const ReuseStates& s) {
        return py::make_tuple(s.layers(), s.tokens(), s.dim());
      })
      .def_property_readonly("dtypes", [](const ReuseStates& s) {
        return py::make_tuple(std::string(dtype_name(s.tok_dtype())),
                              std::string(dtype_name(s.kv_dtype())));
      })
      .def("__len__", &ReuseStates::size)
      .def("__contains__", [](const ReuseStates& s, py::handle id) {
        return py::isinstance<py::str>(id) && s.contains(id.cast<std::string>());
      })
      .def("to_bytes", &state_to_bytes<ReuseStates>, py::arg("streams") = py::none())
      .def_static("from_bytes", &state_from_bytes<ReuseStates>, py::arg("data"))
      .def("__repr__", [](const ReuseStates& s) {
        return "<pystream._core.ReuseStates streams=" + std::to_string(s.size()) +
               " record_bytes=" + std::to_string(s.record_bytes()) + " max_bytes=" +
               std::to_string(s.max_bytes()) + ">";
      });
}
