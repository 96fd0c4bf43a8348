// kvhub._native: the Python module over kvhub::Client (docs/client.md, "Python").
//
// Serving engines call it from Python: publish / lookup_prefix / fetch at the
// token level, put / get / lookup / delete at the key level. Block payloads are
// any buffer-protocol object (bytes, bytearray, memoryview, numpy arrays; fetch
// and get need writable, C-contiguous ones); keys are 16-byte `bytes` (the
// canonical serialization of DESIGN §2); tokens any integer sequence or array
// whose ids fit int32 (a C-contiguous numpy int32 array avoids a copy). Every
// call that waits on the network (and encode/decode) releases the GIL while it
// runs, so Python threads may share one Client. A call that fails whole raises
// kvhub.Error whose message starts with the status code name ("INVALID_ARGUMENT:
// ...") and whose `code` attribute is that name; per-block outcomes come back in
// the result.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cxxabi.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "client/fork_guard.h"
#include "codec/block_format.h"
#include "codec/codec.h"
#include "codec/rope.h"
#include "codec/segment_layout.h"
#include "common/keys.h"
#include "common/log.h"
#include "common/model_spec.h"

namespace py = pybind11;

namespace kvhub::python {
namespace {

// Raised as kvhub.Error, whose `code` attribute is the status code's name
// ("INVALID_ARGUMENT", "FAILED_PRECONDITION", ...): callers branch on it, not on the
// message's text.
class Error : public std::runtime_error {
 public:
  explicit Error(const absl::Status& s) : std::runtime_error(s.ToString()), code_(s.code()) {}
  absl::StatusCode code() const { return code_; }

 private:
  absl::StatusCode code_;
};

template <typename T>
T Check(absl::StatusOr<T> v) {
  if (!v.ok()) throw Error(v.status());
  return *std::move(v);
}

std::optional<std::string> ErrorText(const absl::Status& s) {
  if (s.ok()) return std::nullopt;
  return s.ToString();
}

BlockKey KeyFromBytes(const py::bytes& b) {
  const std::string_view v(b);  // Debian's absl::string_view is not std::string_view
  absl::StatusOr<BlockKey> k = U128::FromBytes(absl::string_view(v.data(), v.size()));
  if (!k.ok()) throw Error(absl::InvalidArgumentError("a key is 16 bytes (kvhub.block_keys makes them)"));
  return *k;
}

std::vector<BlockKey> Keys(const std::vector<py::bytes>& keys) {
  std::vector<BlockKey> out;
  out.reserve(keys.size());
  for (const py::bytes& k : keys) out.push_back(KeyFromBytes(k));
  return out;
}

py::bytes KeyBytes(const BlockKey& k) {
  const std::array<uint8_t, 16> b = k.Bytes();
  return py::bytes(reinterpret_cast<const char*>(b.data()), b.size());
}

std::vector<py::bytes> KeyList(const std::vector<BlockKey>& keys) {
  std::vector<py::bytes> out;
  out.reserve(keys.size());
  for (const BlockKey& k : keys) out.push_back(KeyBytes(k));
  return out;
}

// Takes the GIL back. While the interpreter exits, CPython ends a daemon thread that
// asks for the GIL with pthread_exit. Unwinding from here would run the destructors
// of the caller's frames (token arrays, buffer views, pybind11's argument casters:
// Python references) without the GIL, racing the main thread's finalization, and out
// of a destructor it aborted the process ("terminate called without an active
// exception"). Such a thread stops here instead, holding what it holds, until the
// process exits (what CPython itself does to daemon threads from 3.14 on).
void TakeGilBack(PyThreadState* saved) {
  try {
    PyEval_RestoreThread(saved);
  } catch (abi::__forced_unwind&) {
    for (;;) pause();  // never returns: the unwinding must not go on, nor be swallowed
  }
}

// Runs f() with the GIL released and takes it back by a plain call (TakeGilBack),
// not from a destructor as py::gil_scoped_release does.
template <typename F>
auto WithoutGil(F&& f) -> decltype(f()) {
  PyThreadState* saved = PyEval_SaveThread();
  auto run = [&]() -> decltype(f()) {
    try {
      return f();
    } catch (...) {
      TakeGilBack(saved);
      throw;
    }
  };
  decltype(f()) r = run();
  TakeGilBack(saved);
  return r;
}

// A format of bytes (struct's B and c: what bytes and bytearray export; an int8
// array's b is ids), after an optional byte-order or size mark.
bool IsByteFormat(std::string_view f) {
  if (!f.empty() && (f[0] == '@' || f[0] == '=' || f[0] == '<' || f[0] == '>' || f[0] == '!')) f.remove_prefix(1);
  return f == "B" || f == "c";
}

// numpy, checked once: pybind11 2.10 reads a dtype's item size from NumPy 1's struct
// layout, and under NumPy 2 it reads other bytes (decoded arrays and token checks
// came out wrong without an error), so NumPy 2 is refused with ImportError. Checked
// where numpy is first used, not only at import (numpy may become importable later).
// Call with the GIL held.
py::module_ Numpy() {
  py::module_ np = py::module_::import("numpy");
  static bool checked = false;  // guarded by the GIL
  if (!checked) {
    const std::string version = np.attr("__version__").cast<std::string>();
    if (!version.empty() && version[0] >= '2' && version[0] <= '9' && (version.size() == 1 || version[1] == '.')) {
      throw py::import_error(absl::StrCat(
          "kvhub._native was built with pybind11 ", PYBIND11_VERSION_MAJOR, ".", PYBIND11_VERSION_MINOR,
          ", which reads NumPy 1 arrays only; this interpreter has numpy ", version,
          ": use Debian's python3-numpy (/usr/bin/python3), or build kvhub against pybind11 >= 2.12"));
    }
    checked = true;
  }
  return np;
}

// Whether a buffer format holds Python objects ('O'), outside the field names of
// a structured format ("T{<i:Offset:}" names a field Offset and holds none).
bool HoldsObjects(const std::string& format) {
  bool in_name = false;
  for (char c : format) {
    if (c == ':') {
      in_name = !in_name;
    } else if (!in_name && c == 'O') {
      return true;
    }
  }
  return false;
}

// Whether the interpreter is exiting.
bool Finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

// Token ids as a C-contiguous int32 array (no copy when given one).
using Tokens = py::array_t<int32_t, py::array::c_style>;

// Any integer array or sequence whose ids all fit int32 (DESIGN §2 hashes ids as
// i32le). Floats, bools, strings and ids out of range raise INVALID_ARGUMENT: a cast
// would silently hash other ids than the engine's and miss (or collide) forever.
Tokens ToTokens(const py::object& tokens) {
  // Bytes hold bytes, not ids: numpy made a bytearray one uint8 id per byte, which
  // hashed to keys no engine has (kvhub.keys refuses them too). A memoryview of
  // integers (of an int32 array) is ids; one of bytes is not.
  bool byte_view = false;
  if (PyMemoryView_Check(tokens.ptr())) {
    // Through the attribute: a released view raises (its buffer's format may be freed).
    try {
      byte_view = IsByteFormat(tokens.attr("format").cast<std::string>());
    } catch (const py::error_already_set& e) {
      if (!e.matches(PyExc_ValueError)) throw;
      throw Error(absl::InvalidArgumentError(absl::StrCat("tokens: ", e.what())));
    }
  }
  if (PyBytes_Check(tokens.ptr()) || PyByteArray_Check(tokens.ptr()) || byte_view) {
    throw Error(absl::InvalidArgumentError(
        "tokens must be integer token ids, not bytes, bytearray or a memoryview of bytes (for packed int32: "
        "numpy.frombuffer(b, dtype='<i4'))"));
  }
  py::module_ np = Numpy();
  py::array a;
  try {
    a = np.attr("asarray")(tokens);
  } catch (const py::error_already_set& e) {
    // What numpy says of a value that is no token list; anything else (Ctrl-C's
    // KeyboardInterrupt, MemoryError) goes on as it is.
    if (!e.matches(PyExc_TypeError) && !e.matches(PyExc_ValueError) && !e.matches(PyExc_OverflowError)) throw;
    throw Error(absl::InvalidArgumentError(absl::StrCat("tokens: ", e.what())));
  }
  if (a.ndim() != 1) throw Error(absl::InvalidArgumentError("tokens must be one-dimensional"));
  // Arrays and tensors (numpy, the buffer protocol, __array__) carry a dtype; a range
  // holds ints. Only a plain sequence is walked, element by element.
  const bool plain_sequence = !py::isinstance<py::array>(tokens) && !PyObject_CheckBuffer(tokens.ptr()) &&
                              !PyRange_Check(tokens.ptr()) && !py::hasattr(tokens, "__array__") &&
                              !py::hasattr(tokens, "__array_interface__");
  if (plain_sequence && a.dtype().kind() != 'b') {
    // numpy turns [5, True] (a list, tuple, deque: any plain sequence) into int64
    // [5, 1]: a bool is no token id (kvhub.keys refuses it too).
    const py::object np_bool = np.attr("bool_");
    for (const py::handle item : tokens) {
      if (PyBool_Check(item.ptr()) || py::isinstance(item, np_bool)) {
        throw Error(absl::InvalidArgumentError(absl::StrCat(
            "tokens must be integer token ids; got a bool (", py::str(item).cast<std::string>(), ")")));
      }
    }
  }
  const char kind = a.dtype().kind();
  if (a.size() > 0 && kind != 'i' && kind != 'u') {
    throw Error(absl::InvalidArgumentError(absl::StrCat(
        "tokens must be integer token ids; got dtype ", py::str(a.dtype()).cast<std::string>())));
  }
  // An int32 array: used as it is when C-contiguous and native (a copy otherwise).
  if (a.size() == 0 || (kind == 'i' && a.itemsize() == 4)) {
    return np.attr("ascontiguousarray")(a, py::arg("dtype") = "int32").cast<Tokens>();
  }
  // Others are range-checked and narrowed here, over a 64-bit view (no copy for the
  // int64 array numpy makes of a list). Not with numpy's min, max and astype: they
  // run Python code or let go of the GIL, and a daemon thread doing either while
  // the interpreter exits is ended by CPython unwinding through these frames, whose
  // destructors then touch the torn-down interpreter (a SIGSEGV at exit, 1-2% of
  // the exits of a process with daemon threads inside fetch).
  const bool is_unsigned = kind == 'u';
  const py::array wide = np.attr("ascontiguousarray")(a, py::arg("dtype") = is_unsigned ? "uint64" : "int64");
  const size_t n = static_cast<size_t>(wide.size());
  Tokens out(static_cast<py::ssize_t>(n));
  int32_t* dst = out.mutable_data();
  const auto narrow = [&](const auto* p) {
    const auto [lo, hi] = std::minmax_element(p, p + n);
    if (std::cmp_less(*lo, INT32_MIN) || std::cmp_greater(*hi, INT32_MAX)) {
      throw Error(absl::InvalidArgumentError(absl::StrCat("tokens must fit int32; got ids from ", *lo, " to ", *hi)));
    }
    for (size_t i = 0; i < n; ++i) dst[i] = static_cast<int32_t>(p[i]);
  };
  if (is_unsigned) {
    narrow(static_cast<const uint64_t*>(wide.data()));
  } else {
    narrow(static_cast<const int64_t*>(wide.data()));
  }
  return out;
}

std::span<const int32_t> TokenSpan(const Tokens& t) { return {t.data(), static_cast<size_t>(t.size())}; }

// Views of the payloads (read-only) or destinations (writable), kept alive
// (py::buffer_info releases its view) until the call returns.
struct Views {
  std::vector<py::buffer_info> infos;
  std::vector<std::span<const uint8_t>> in;
  std::vector<std::span<uint8_t>> out;
};

// Whether the buffer's bytes are one C-ordered run from info.ptr (what the C++ side
// reads): a reversed or strided view is not, and reading size bytes from its ptr
// would leave it.
bool IsCContiguous(const py::buffer_info& info) {
  py::ssize_t expect = info.itemsize;
  for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
    if (info.shape[d] > 1 && info.strides[d] != expect) return false;
    expect *= info.shape[d];
  }
  return true;
}

Views ViewBuffers(const std::vector<py::buffer>& buffers, bool writable) {
  Views v;
  v.infos.reserve(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) {
    py::buffer_info info;
    try {
      info = buffers[i].request(writable);
    } catch (const std::exception& e) {
      throw Error(absl::InvalidArgumentError(
          absl::StrCat("buffer ", i, writable ? " must be writable: " : ": ", e.what())));
    }
    const auto bytes = static_cast<size_t>(info.size * info.itemsize);
    if (!IsCContiguous(info)) throw Error(absl::InvalidArgumentError(absl::StrCat("buffer ", i, " is not C-contiguous")));
    // Python object pointers ('O': a numpy object array, ctypes py_object): block
    // bytes written over them crash the interpreter, and uploading them leaks addresses.
    if (HoldsObjects(info.format)) {
      throw Error(absl::InvalidArgumentError(
          absl::StrCat("buffer ", i, " holds Python objects (format '", info.format, "'), not bytes")));
    }
    auto* p = static_cast<uint8_t*>(info.ptr);
    if (writable) {
      v.out.emplace_back(p, bytes);
    } else {
      v.in.emplace_back(p, bytes);
    }
    v.infos.push_back(std::move(info));
  }
  return v;
}

struct PyPutResult {
  size_t stored = 0, skipped = 0, failed = 0;
  uint64_t bytes_uploaded = 0;
  std::vector<std::string> outcome;                // "stored" | "skipped" | "failed"
  std::vector<std::optional<std::string>> errors;  // None unless failed
  std::vector<py::bytes> keys;                     // publish: the full blocks' keys
};

PyPutResult ToPy(const PutResult& r) {
  PyPutResult p;
  p.stored = r.stored;
  p.skipped = r.skipped;
  p.failed = r.failed;
  p.bytes_uploaded = r.bytes_uploaded;
  for (PutOutcome o : r.outcome) {
    p.outcome.push_back(o == PutOutcome::kStored ? "stored" : o == PutOutcome::kSkipped ? "skipped" : "failed");
  }
  for (const absl::Status& s : r.errors) p.errors.push_back(ErrorText(s));
  return p;
}

struct PyLookupResult {
  std::vector<bool> present;
  std::vector<bool> answered;  // per key: its shard answered (present is then exact)
  size_t hit_blocks = 0;
  uint64_t hit_tokens = 0;
  size_t unreachable_keys = 0;
  std::optional<std::string> first_error;
};

PyLookupResult ToPy(const LookupResult& r) {
  PyLookupResult p;
  for (uint8_t b : r.present) p.present.push_back(b != 0);
  for (uint8_t b : r.answered) p.answered.push_back(b != 0);
  p.hit_blocks = r.hit_blocks;
  p.hit_tokens = r.hit_tokens;
  p.unreachable_keys = r.unreachable_keys;
  p.first_error = ErrorText(r.first_error);
  return p;
}

struct PyFetchResult {
  size_t valid_blocks = 0;
  uint64_t valid_tokens = 0;
  std::vector<uint64_t> sizes;
  std::vector<std::optional<std::string>> errors;  // None = loaded and verified
};

PyFetchResult ToPy(const FetchResult& r) {
  PyFetchResult p;
  p.valid_blocks = r.valid_blocks;
  p.valid_tokens = r.valid_tokens;
  p.sizes = r.sizes;
  for (const absl::Status& s : r.status) p.errors.push_back(ErrorText(s));
  return p;
}

// ---- codecs (codec/codec.h): KV blocks as numpy arrays [layer][k|v][token][head][dim]

// The element type numpy arrays carry for `d`: bf16 and fp16 travel as their
// 16-bit patterns (numpy has no bfloat16), fp32 as float32.
py::dtype ArrayDtype(DType d) {
  return d == DType::kFp32 ? py::dtype::of<float>() : py::dtype::of<uint16_t>();
}

// Checks `a` is C-contiguous [layers][2][tokens][kv_heads][head_dim] of the spec's
// element type; returns its shape.
codec::KvShape ShapeOf(const py::array& a, const ModelSpec& spec) {
  if (a.ndim() != 5 || a.shape(0) != spec.layers || a.shape(1) != 2 || a.shape(3) != spec.kv_heads ||
      a.shape(4) != spec.head_dim) {
    throw Error(absl::InvalidArgumentError(absl::StrCat(
        "kv must have shape [layers=", spec.layers, ", 2, tokens, kv_heads=", spec.kv_heads,
        ", head_dim=", spec.head_dim, "] for this spec")));
  }
  // Equality, not identity: an array that crossed a process boundary (pickled to
  // a worker) carries a dtype object of its own.
  if (!a.dtype().equal(ArrayDtype(spec.dtype))) {
    throw Error(absl::InvalidArgumentError(absl::StrCat(
        "kv must be ", spec.dtype == DType::kFp32 ? "float32" : "uint16 (the 16-bit patterns of ",
        DTypeName(spec.dtype), spec.dtype == DType::kFp32 ? "" : ")", " for this spec")));
  }
  if (!(a.flags() & py::array::c_style)) throw Error(absl::InvalidArgumentError("kv must be C-contiguous"));
  codec::KvShape s;
  s.layers = spec.layers;
  s.kv_heads = spec.kv_heads;
  s.head_dim = spec.head_dim;
  // Checked before the cast: 2^32 + 16 tokens passed as 16 and encoded only those.
  if (a.shape(2) > static_cast<py::ssize_t>(codec::KvShape::kMaxTokens)) {
    throw Error(absl::InvalidArgumentError(
        absl::StrCat("kv has ", a.shape(2), " tokens, more than a block holds (", codec::KvShape::kMaxTokens, ")")));
  }
  s.tokens = static_cast<uint32_t>(a.shape(2));
  s.dtype = spec.dtype;
  if (absl::Status v = s.Validate(); !v.ok()) throw Error(v);
  return s;
}

py::bytes Encode(const py::array& kv, const ModelSpec& spec, int64_t base_position, const std::string& codec_name,
                 uint32_t group_size, uint32_t sink_tokens, bool keys_pre_rope) {
  (void)Numpy();  // NumPy 1 only, before the array's item size is read
  codec::CodecParams p;
  p.codec = Check(codec::ParseCodecName(codec_name));
  p.group_size = group_size;
  p.sink_tokens = sink_tokens;
  p.keys_pre_rope = keys_pre_rope;
  if (absl::Status v = p.Validate(); !v.ok()) throw Error(v);
  codec::KvView view;
  view.shape = ShapeOf(kv, spec);
  view.data = static_cast<const uint8_t*>(kv.data());
  view.size = view.shape.RawBytes();
  view.base_position = base_position;
  view.rope_base = spec.rope_base;
  view.rope_pairing = spec.rope_pairing;
  view.fingerprint = spec.Fingerprint();
  std::vector<uint8_t> out;
  absl::Status s = WithoutGil([&] { return codec::Encode(view, p, &out); });
  if (!s.ok()) throw Error(s);
  return py::bytes(reinterpret_cast<const char*>(out.data()), out.size());
}

// The exact size of an encoded block, so fetch buffers can be allocated before the
// blocks are seen (lossless sizes depend on the data: INVALID_ARGUMENT).
uint64_t EncodedSizeOf(const ModelSpec& spec, const std::string& codec_name, std::optional<uint32_t> tokens,
                       int64_t base_position, uint32_t group_size, uint32_t sink_tokens) {
  codec::CodecParams p;
  p.codec = Check(codec::ParseCodecName(codec_name));
  p.group_size = group_size;
  p.sink_tokens = sink_tokens;
  if (absl::Status v = p.Validate(); !v.ok()) throw Error(v);
  if (absl::Status v = codec::CheckPosition(base_position, "base_position"); !v.ok()) throw Error(v);
  codec::KvShape s;
  s.layers = spec.layers;
  s.kv_heads = spec.kv_heads;
  s.head_dim = spec.head_dim;
  s.tokens = tokens.value_or(spec.block_tokens);
  s.dtype = spec.dtype;
  return Check(codec::EncodedSize(s, p, codec::SinksInBlock(p.codec, sink_tokens, base_position, s.tokens)));
}

codec::BlockHeader Inspect(const py::buffer& block, py::buffer_info* info) {
  *info = block.request();
  if (!IsCContiguous(*info)) {
    throw Error(absl::InvalidArgumentError("block must be a C-contiguous buffer (bytes, bytearray, a contiguous array)"));
  }
  const auto n = static_cast<size_t>(info->size * info->itemsize);
  return Check(codec::InspectBlock(absl::Span<const uint8_t>(static_cast<const uint8_t*>(info->ptr), n)));
}

py::array Decode(const py::buffer& block, std::optional<int64_t> target_position, uint64_t max_raw_bytes) {
  (void)Numpy();  // NumPy 1 only, before an array is made
  py::buffer_info info;
  const codec::BlockHeader h = Inspect(block, &info);
  // The header says how large the array is; a block from a cache is input like any
  // other, and a small lossless block can claim (and really expand to) tens of GiB.
  if (h.shape.RawBytes() > max_raw_bytes) {
    throw Error(absl::ResourceExhaustedError(absl::StrCat(
        "block decodes to ", h.shape.RawBytes(), " bytes, above max_raw_bytes (", max_raw_bytes,
        "); pass a larger max_raw_bytes to decode it")));
  }
  py::array out(ArrayDtype(h.shape.dtype),
                std::vector<py::ssize_t>{h.shape.layers, 2, h.shape.tokens, h.shape.kv_heads, h.shape.head_dim});
  codec::KvMutableView view;
  view.shape = h.shape;
  view.data = static_cast<uint8_t*>(out.mutable_data());
  view.size = h.shape.RawBytes();
  codec::DecodeOptions o;
  o.target_position = target_position;
  const auto n = static_cast<size_t>(info.size * info.itemsize);
  const absl::Span<const uint8_t> bytes(static_cast<const uint8_t*>(info.ptr), n);
  absl::Status s = WithoutGil([&] { return codec::Decode(bytes, view, o); });
  if (!s.ok()) throw Error(s);
  return out;
}

py::dict InspectDict(const py::buffer& block) {
  py::buffer_info info;
  const codec::BlockHeader h = Inspect(block, &info);
  py::dict d;
  d["codec"] = std::string(codec::CodecName(h.codec));
  d["layers"] = h.shape.layers;
  d["kv_heads"] = h.shape.kv_heads;
  d["head_dim"] = h.shape.head_dim;
  d["tokens"] = h.shape.tokens;
  d["dtype"] = std::string(DTypeName(h.shape.dtype));
  d["base_position"] = h.base_position;
  d["group_size"] = h.group_size;
  d["sink_tokens"] = h.sink_tokens;
  d["keys_pre_rope"] = h.keys_pre_rope();
  d["fingerprint"] = h.fingerprint.Hex();
  d["raw_bytes"] = h.raw_bytes;
  d["bytes"] = h.total_bytes();
  return d;
}

// Members as one comma-separated string or as a sequence of addresses.
std::string MemberText(const py::object& members) {
  if (py::isinstance<py::str>(members)) return members.cast<std::string>();
  if (!py::isinstance<py::sequence>(members) || py::isinstance<py::bytes>(members)) {
    throw Error(absl::InvalidArgumentError("members: give 'HOST:PORT,...' or a list of 'HOST:PORT' strings"));
  }
  std::string text;
  size_t i = 0;
  for (const py::handle item : members) {
    if (!py::isinstance<py::str>(item)) {
      throw Error(absl::InvalidArgumentError(absl::StrCat("members[", i, "] is not a string")));
    }
    const std::string address = item.cast<std::string>();
    if (address.find(',') != std::string::npos) {
      throw Error(absl::InvalidArgumentError(
          absl::StrCat("members[", i, "] '", address, "' holds a comma: one address per item")));
    }
    absl::StrAppend(&text, i == 0 ? "" : ",", address);
    ++i;
  }
  return text;
}

// The Python-facing client over a kvhub::Client. Calls run with the GIL released,
// so close() may come from one thread while others are inside calls: it refuses new
// calls at once, waits for those in flight to return, then ends the client (before,
// it destroyed the client under them: a crash in the serving process).
class PyClient {
 public:
  explicit PyClient(ClientConfig config) : client_(Check(Client::Create(std::move(config)))) {}

  // Holds the client open for one call (taken and dropped with the GIL held).
  class Use {
   public:
    explicit Use(PyClient& owner) : owner_(owner) {
      absl::MutexLock l(&owner_.mu_);
      if (owner_.closing_ || owner_.client_ == nullptr) {
        throw Error(absl::FailedPreconditionError("the client is closed"));
      }
      ++owner_.in_flight_;
      client_ = owner_.client_.get();
    }
    ~Use() {
      absl::MutexLock l(&owner_.mu_);
      --owner_.in_flight_;
    }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    Client& client() const { return *client_; }

   private:
    PyClient& owner_;
    Client* client_ = nullptr;
  };

  PyPutResult Publish(const std::string& ns, const ModelSpec& spec, const py::object& tokens,
                      const std::vector<py::buffer>& blocks, bool pin) {
    Views v = ViewBuffers(blocks, /*writable=*/false);
    const Tokens held = ToTokens(tokens);
    const std::span<const int32_t> t = TokenSpan(held);
    const Use use(*this);
    Client& c = use.client();
    absl::StatusOr<PublishResult> r = WithoutGil([&] { return c.Publish(ns, spec, t, v.in, pin); });
    PublishResult pr = Check(std::move(r));
    PyPutResult p = ToPy(pr);
    p.keys = KeyList(pr.keys);
    return p;
  }

  PyLookupResult LookupPrefix(const std::string& ns, const ModelSpec& spec, const py::object& tokens) {
    const Tokens held = ToTokens(tokens);
    const std::span<const int32_t> t = TokenSpan(held);
    const Use use(*this);
    Client& c = use.client();
    absl::StatusOr<LookupResult> r = WithoutGil([&] { return c.LookupPrefix(ns, spec, t); });
    return ToPy(Check(std::move(r)));
  }

  PyFetchResult Fetch(const std::string& ns, const ModelSpec& spec, const py::object& tokens,
                      const std::vector<py::buffer>& buffers) {
    Views v = ViewBuffers(buffers, /*writable=*/true);
    const Tokens held = ToTokens(tokens);
    const std::span<const int32_t> t = TokenSpan(held);
    const Use use(*this);
    Client& c = use.client();
    absl::StatusOr<FetchResult> r = WithoutGil([&] { return c.Fetch(ns, spec, t, v.out.size(), v.out); });
    return ToPy(Check(std::move(r)));
  }

  PyLookupResult Lookup(const std::string& ns, const std::vector<py::bytes>& keys) {
    const std::vector<BlockKey> k = Keys(keys);
    const Use use(*this);
    Client& c = use.client();
    absl::StatusOr<LookupResult> r = WithoutGil([&] { return c.Lookup(ns, k); });
    return ToPy(Check(std::move(r)));
  }

  PyPutResult Put(const std::string& ns, const std::vector<py::bytes>& keys, const std::vector<py::buffer>& blocks,
                  bool pin, const std::optional<std::vector<std::optional<py::bytes>>>& parents) {
    if (keys.size() != blocks.size()) {
      throw Error(absl::InvalidArgumentError(
          absl::StrCat(keys.size(), " keys but ", blocks.size(), " blocks: give one payload per key")));
    }
    if (parents.has_value() && parents->size() != keys.size()) {
      throw Error(absl::InvalidArgumentError(absl::StrCat(
          keys.size(), " keys but ", parents->size(), " parents: give one parent key (or None) per key")));
    }
    const std::vector<BlockKey> k = Keys(keys);
    std::vector<std::optional<BlockKey>> parent(k.size());
    if (parents.has_value()) {
      for (size_t i = 0; i < k.size(); ++i) {
        if ((*parents)[i].has_value()) parent[i] = KeyFromBytes(*(*parents)[i]);
      }
    }
    Views v = ViewBuffers(blocks, /*writable=*/false);
    std::vector<BlockPut> puts;
    puts.reserve(k.size());
    for (size_t i = 0; i < k.size(); ++i) puts.push_back({k[i], parent[i], v.in[i], pin});
    const Use use(*this);
    Client& c = use.client();
    absl::StatusOr<PutResult> r = WithoutGil([&] { return c.Put(ns, puts); });
    return ToPy(Check(std::move(r)));
  }

  PyFetchResult Get(const std::string& ns, const std::vector<py::bytes>& keys, const std::vector<py::buffer>& buffers) {
    if (keys.size() != buffers.size()) {
      throw Error(absl::InvalidArgumentError(
          absl::StrCat(keys.size(), " keys but ", buffers.size(), " buffers: give one buffer per key")));
    }
    const std::vector<BlockKey> k = Keys(keys);
    Views v = ViewBuffers(buffers, /*writable=*/true);
    const Use use(*this);
    Client& c = use.client();
    absl::StatusOr<FetchResult> r = WithoutGil([&] { return c.Get(ns, k, v.out); });
    return ToPy(Check(std::move(r)));
  }

  std::vector<std::optional<std::string>> Delete(const std::string& ns, const std::vector<py::bytes>& keys) {
    const std::vector<BlockKey> k = Keys(keys);
    const Use use(*this);
    Client& c = use.client();
    absl::StatusOr<std::vector<absl::Status>> r = WithoutGil([&] { return c.Delete(ns, k); });
    std::vector<std::optional<std::string>> out;
    for (const absl::Status& s : Check(std::move(r))) out.push_back(ErrorText(s));
    return out;
  }

  std::vector<std::optional<std::string>> Pin(const std::string& ns, const std::vector<py::bytes>& keys, bool pin) {
    const std::vector<BlockKey> k = Keys(keys);
    const Use use(*this);
    Client& c = use.client();
    absl::StatusOr<std::vector<absl::Status>> r = WithoutGil([&] { return c.Pin(ns, k, pin); });
    std::vector<std::optional<std::string>> out;
    for (const absl::Status& s : Check(std::move(r))) out.push_back(ErrorText(s));
    return out;
  }

  // The Python objects are made after the Use ends: making them can run the cycle
  // collector, whose finalizers may close() this client, which would wait for this
  // very call.
  py::list Stats() {
    std::vector<MemberStats> st;
    {
      const Use use(*this);
      Client& c = use.client();
      st = WithoutGil([&] { return c.Stats(); });
    }
    py::list out;
    for (const MemberStats& m : st) {
      py::dict d;
      d["address"] = m.address;
      d["error"] = ErrorText(m.stats.status());
      if (m.stats.ok()) {
        const v1::StatsResponse& s = *m.stats;
        d["node_id"] = s.node_id();
        d["lookup_requested_tokens"] = s.lookup_requested_tokens();
        d["lookup_hit_tokens"] = s.lookup_hit_tokens();
        d["get_bytes"] = s.get_bytes();
        d["put_bytes"] = s.put_bytes();
        d["checksum_failures"] = s.checksum_failures();
        d["ucx_status"] = s.ucx_status();
        d["ucx_connections"] = s.ucx_connections();
        d["ucx_sessions"] = s.ucx_sessions();
        d["ucx_worker_resets"] = s.ucx_worker_resets();
        if (s.tiers_size() > 0) {
          d["capacity_bytes"] = s.tiers(0).capacity_bytes();
          d["used_bytes"] = s.tiers(0).used_bytes();
          d["blocks"] = s.tiers(0).blocks();
          d["evictions"] = s.tiers(0).evictions();
          d["pinned_blocks"] = s.tiers(0).pinned_blocks();
        }
      }
      out.append(d);
    }
    return out;
  }

  py::list TransportStats() {
    py::list out;
    std::vector<ShardTransportStats> stats;
    {
      const Use use(*this);
      Client& c = use.client();
      // Without the GIL: it waits for a shard's UCX connection being made (up to the
      // control deadline when the shard is slow), and must not stop every Python thread.
      stats = WithoutGil([&] { return c.TransportStats(); });
    }
    for (const ShardTransportStats& t : stats) {
      py::dict d;
      d["address"] = t.address;
      d["transport"] = t.transport;
      d["ucx_get_bytes"] = t.ucx_get_bytes;
      d["ucx_put_bytes"] = t.ucx_put_bytes;
      d["grpc_get_bytes"] = t.grpc_get_bytes;
      d["grpc_put_bytes"] = t.grpc_put_bytes;
      out.append(d);
    }
    return out;
  }

  // New calls raise at once; returns once the calls in flight have returned (each is
  // bounded by its deadline) and the client's sessions and connections have ended,
  // also when another thread's close is the one ending them.
  void Close() {
    if (Finalizing()) {
      // A daemon thread whose call returned meanwhile is parked taking the GIL back
      // (TakeGilBack) and never ends its call: waiting for it hung the exit (a
      // __del__ that closes). The client is left as it is; the process is ending.
      absl::MutexLock l(&mu_);
      closing_ = true;
      (void)client_.release();
      ended_ = true;
      return;
    }
    WithoutGil([&] {
      std::unique_ptr<Client> ending = TakeClient();
      if (ending == nullptr) {
        absl::MutexLock l(&mu_);
        mu_.Await(absl::Condition(&ended_));  // another close is ending it
        return true;
      }
      ending.reset();  // outside mu_: ending the sessions may take a while
      absl::MutexLock l(&mu_);
      ended_ = true;
      return true;
    });
  }

  // A client dropped without close() (del, end of scope, the cycle collector, on
  // any thread) is ended here, with the GIL held by Python's deallocation: ending it
  // waits for releases to be sent and sessions to end (bounded by the deadlines), so
  // the GIL is let go meanwhile (it was kept off the main thread, and a client freed
  // by the collector on a worker thread stalled every Python thread). Taking it back
  // is TakeGilBack: a thread CPython ends there while the interpreter exits stops
  // instead of unwinding out of this destructor. Not while the interpreter exits.
  ~PyClient() {
    std::unique_ptr<Client> ending = TakeClient();
    if (ending == nullptr) return;
    if (PyGILState_Check() && !Finalizing()) {
      WithoutGil([&] {
        ending.reset();
        return true;
      });
    }
  }

 private:
  // Marks the client closing, waits for the calls in flight and takes it; null when
  // another close took it, or in a forked child (where the threads of calls in flight
  // at the fork do not exist, so they never return: the client is left as it is; its
  // destructor would wait for them too). Call without the GIL.
  std::unique_ptr<Client> TakeClient() {
    absl::MutexLock l(&mu_);
    closing_ = true;
    if (!CheckNotForkedAfterClient().ok()) {
      (void)client_.release();
      ended_ = true;
      return nullptr;
    }
    mu_.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &in_flight_));
    return std::move(client_);
  }

  absl::Mutex mu_;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;  // a close has ended the client
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::unique_ptr<Client> client_ ABSL_GUARDED_BY(mu_);
};

}  // namespace
}  // namespace kvhub::python

PYBIND11_MODULE(_native, m) {
  using namespace kvhub;
  using namespace kvhub::python;
  m.doc() = "kvhub client (C++ kvhub::Client); see docs/client.md, \"Python\"";
  // The client's log goes to stderr, never into the program's stdout (its JSON, its
  // tables), at warn unless KVHUB_LOG_LEVEL says otherwise, as for the kvhub CLI.
  LogToStderr("kvhub");
  const char* level = std::getenv("KVHUB_LOG_LEVEL");
  if (absl::Status s = SetLogLevel(level != nullptr ? level : "warn"); !s.ok()) {
    std::fprintf(stderr, "kvhub: KVHUB_LOG_LEVEL: %s\n", std::string(s.message()).c_str());
  }
  // NumPy 2 refused at import already (Numpy()); without numpy the module still
  // imports: keys, put, get and lookup do not need it (Numpy() checks at first use).
  try {
    (void)Numpy();
  } catch (const py::error_already_set& e) {
    if (!e.matches(PyExc_ImportError)) throw;
  }
  static py::exception<Error> error_type(m, "Error", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      py::object err = py::handle(error_type.ptr())(e.what());  // an instance, to carry the code
      err.attr("code") = absl::StatusCodeToString(e.code());
      PyErr_SetObject(error_type.ptr(), err.ptr());
    }
  });

  py::class_<ModelSpec>(m, "ModelSpec")
      .def(py::init([](const std::string& text) { return Check(ModelSpec::Parse(text)); }), py::arg("text"),
           "Parses the compact form, e.g. 'model=llama3-8b,layers=32,kv_heads=8,head_dim=128,dtype=bf16,"
           "rope_base=500000,block_tokens=256'.")
      .def_property_readonly("block_tokens", [](const ModelSpec& s) { return s.block_tokens; })
      .def_property_readonly("fingerprint", [](const ModelSpec& s) { return s.Fingerprint().Hex(); })
      .def_property_readonly("compact", &ModelSpec::CompactText, "The compact form; ModelSpec(spec.compact) is the same spec.")
      .def("__repr__",
           [](const ModelSpec& s) { return absl::StrCat("ModelSpec(fingerprint=", s.Fingerprint().Hex(), ")"); })
      // An operator: against anything but a ModelSpec it is NotImplemented (so False), not a TypeError.
      .def("__eq__", [](const ModelSpec& a, const ModelSpec& b) { return a.Fingerprint() == b.Fingerprint(); },
           py::is_operator())
      .def("__hash__", [](const ModelSpec& s) { return static_cast<size_t>(s.Fingerprint().lo); })
      // Pickled as its compact form: a spec crosses to spawn/forkserver workers.
      .def(py::pickle([](const ModelSpec& s) { return py::make_tuple(s.CompactText()); },
                      [](const py::tuple& t) {
                        if (t.size() != 1) throw Error(absl::InvalidArgumentError("ModelSpec: bad pickle state"));
                        return Check(ModelSpec::Parse(t[0].cast<std::string>()));
                      }));

  m.def(
      "block_keys",
      [](const std::string& ns, const ModelSpec& spec, const py::object& tokens) {
        if (absl::Status s = ValidateNamespace(ns); !s.ok()) throw Error(s);
        const Tokens held = ToTokens(tokens);
        return KeyList(BlockKeys(ns, spec, TokenSpan(held)));
      },
      py::arg("ns"), py::arg("spec"), py::arg("tokens"),
      "The 16-byte keys of every full block of `tokens` (DESIGN §2).");

  m.def("encode", &Encode, py::arg("kv"), py::arg("spec"), py::arg("base_position") = 0,
        py::arg("codec") = "kivi4", py::arg("group_size") = 64, py::arg("sink_tokens") = 1,
        py::arg("keys_pre_rope") = false,
        "Encodes one block's KV, a C-contiguous array [layers][2][tokens][kv_heads][head_dim] (uint16 bit "
        "patterns for bf16/fp16 specs, float32 for fp32), with codec raw|lossless|fp8|int8|kivi4|kivi2 "
        "(docs/codecs.md). base_position: the absolute position of its first token. Returns the block bytes.");
  m.def("decode", &Decode, py::arg("block"), py::arg("target_position") = py::none(),
        py::arg("max_raw_bytes") = uint64_t{1} << 30,
        "Decodes a block (checksums verified) into a new array [layers][2][tokens][kv_heads][head_dim]; "
        "target_position re-rotates RoPE keys to that absolute position. A block whose array would exceed "
        "max_raw_bytes (default 1 GiB) raises kvhub.Error (RESOURCE_EXHAUSTED) before anything is allocated.");
  m.def("encoded_size", &EncodedSizeOf, py::arg("spec"), py::arg("codec") = "kivi4", py::arg("tokens") = py::none(),
        py::arg("base_position") = 0, py::arg("group_size") = 64, py::arg("sink_tokens") = 1,
        "The exact byte size of a block encode() makes with these arguments (tokens: default the spec's "
        "block_tokens), to allocate fetch buffers before the blocks are seen. Lossless sizes depend on the "
        "data: kvhub.Error (INVALID_ARGUMENT).");
  m.def("inspect", &InspectDict, py::arg("block"), "The block's header as a dict (codec, shape, positions, sizes).");

  py::class_<PyPutResult>(m, "PutResult")
      .def_readonly("stored", &PyPutResult::stored)
      .def_readonly("skipped", &PyPutResult::skipped)
      .def_readonly("failed", &PyPutResult::failed)
      .def_readonly("bytes_uploaded", &PyPutResult::bytes_uploaded)
      .def_readonly("outcome", &PyPutResult::outcome)
      .def_readonly("errors", &PyPutResult::errors)
      .def_readonly("keys", &PyPutResult::keys);
  py::class_<PyLookupResult>(m, "LookupResult")
      .def_readonly("present", &PyLookupResult::present)
      .def_readonly("answered", &PyLookupResult::answered)
      .def_readonly("hit_blocks", &PyLookupResult::hit_blocks)
      .def_readonly("hit_tokens", &PyLookupResult::hit_tokens)
      .def_readonly("unreachable_keys", &PyLookupResult::unreachable_keys)
      .def_readonly("first_error", &PyLookupResult::first_error);
  py::class_<PyFetchResult>(m, "FetchResult")
      .def_readonly("valid_blocks", &PyFetchResult::valid_blocks)
      .def_readonly("valid_tokens", &PyFetchResult::valid_tokens)
      .def_readonly("sizes", &PyFetchResult::sizes)
      .def_readonly("errors", &PyFetchResult::errors);

  py::class_<PyClient>(m, "Client")
      .def(py::init([](const py::object& members, const std::string& transport, const std::string& ucx_tls,
                       double deadline_s, const std::string& auth_token, const std::string& tls_ca_file,
                       const std::string& tls_cert_file, const std::string& tls_key_file,
                       const std::string& tls_server_name, bool use_proxy_env, double tls_reload_s,
                       double data_deadline_s, const std::string& ucx_net_devices) {
             ClientConfig c;
             c.members = Check(ClientConfig::ParseMembers(MemberText(members)));
             c.transport = Check(ParseTransportMode(transport));
             c.ucx_tls = ucx_tls;
             c.ucx_net_devices = ucx_net_devices;
             for (const auto& [name, value] : {std::pair{"deadline_s", deadline_s}, std::pair{"data_deadline_s", data_deadline_s}}) {
               // Below a millisecond (but not 0) is no deadline a call can meet; it
               // failed later as kvhub.Error ("control_deadline must be > 0").
               if (!std::isfinite(value) || value < 0 || value > 86400 || (value > 0 && value < 1e-3)) {
                 throw py::value_error(absl::StrCat(
                     name, " must be 0 (the default) or a number of seconds from 0.001 up to 86400, got ", value));
               }
             }
             if (deadline_s > 0) c.control_deadline = absl::Seconds(deadline_s);
             if (data_deadline_s > 0) c.data_deadline = absl::Seconds(data_deadline_s);
             c.auth_token = auth_token;
             c.tls_ca_file = tls_ca_file;
             c.tls_cert_file = tls_cert_file;
             c.tls_key_file = tls_key_file;
             c.tls_server_name = tls_server_name;
             c.use_proxy_env = use_proxy_env;
             if (!(tls_reload_s >= 1 && tls_reload_s <= 86400)) {  // NaN too
               throw py::value_error(absl::StrCat("tls_reload_s must be 1 .. 86400 seconds, got ", tls_reload_s));
             }
             c.tls_reload_interval = absl::Seconds(tls_reload_s);
             return std::make_unique<PyClient>(std::move(c));
           }),
           py::arg("members"), py::arg("transport") = "auto", py::arg("ucx_tls") = "", py::arg("deadline_s") = 0.0,
           py::arg("auth_token") = "", py::arg("tls_ca_file") = "", py::arg("tls_cert_file") = "",
           py::arg("tls_key_file") = "", py::arg("tls_server_name") = "", py::arg("use_proxy_env") = false,
           py::arg("tls_reload_s") = 60.0, py::arg("data_deadline_s") = 0.0, py::arg("ucx_net_devices") = "auto",
           "members: 'HOST:PORT[@WEIGHT],...', or a list of 'HOST:PORT[@WEIGHT]'. transport: auto (UCX where a shard offers it over RDMA "
           "or shared memory), ucx or grpc. deadline_s: deadline of each control call (lookups, stats, commits), "
           "retries included (0: the default, 2 s); data_deadline_s: the same for calls moving block bytes (0: 30 s). "
           "use_proxy_env: follow grpc_proxy/https_proxy/http_proxy (default: connect straight to the shards). "
           "tls_reload_s: how often the TLS files are read again (1 .. 86400). ucx_net_devices: the network devices "
           "UCX may use (UCX_NET_DEVICES); auto: lo when every member is on loopback, else UCX's default.")
      .def("publish", &PyClient::Publish, py::arg("ns"), py::arg("spec"), py::arg("tokens"), py::arg("blocks"),
           py::arg("pin") = false,
           "Stores the full blocks of tokens (one payload per block), skipping those present.")
      .def("lookup_prefix", &PyClient::LookupPrefix, py::arg("ns"), py::arg("spec"), py::arg("tokens"),
           "The longest cached prefix of tokens, in full blocks (hit_blocks, hit_tokens).")
      .def("fetch", &PyClient::Fetch, py::arg("ns"), py::arg("spec"), py::arg("tokens"), py::arg("buffers"),
           "Loads the first len(buffers) blocks into the writable buffers; valid_blocks is the verified run.")
      .def("lookup", &PyClient::Lookup, py::arg("ns"), py::arg("keys"))
      .def("put", &PyClient::Put, py::arg("ns"), py::arg("keys"), py::arg("blocks"), py::arg("pin") = false,
           py::arg("parents") = py::none(),
           "Stores blocks under their keys. parents: per key, the key of the block before it in its chain, "
           "or None (prefix-aware eviction then sees the chain, as publish gives it).")
      .def("get", &PyClient::Get, py::arg("ns"), py::arg("keys"), py::arg("buffers"))
      .def("delete", &PyClient::Delete, py::arg("ns"), py::arg("keys"),
           "Per key: None (deleted) or the error ('NOT_FOUND: ...').")
      .def("pin", &PyClient::Pin, py::arg("ns"), py::arg("keys"), py::arg("pin") = true,
           "Pins (pin=False: unpins) blocks already stored: a pinned block is never evicted and counts against "
           "the namespace's pinned quota. Per key: None (done) or the error ('NOT_FOUND: ...').")
      .def("stats", &PyClient::Stats, "One dict per member: its Stats, or 'error'.")
      .def("transport_stats", &PyClient::TransportStats,
           "Per member: the data plane in use and the block bytes this client moved over UCX and gRPC.")
      .def("close", &PyClient::Close, "Ends the client's sessions and connections; later calls raise.")
      .def("__enter__", [](PyClient& c) -> PyClient& { return c; }, py::return_value_policy::reference)
      .def("__exit__", [](PyClient& c, py::args) { c.Close(); });
}
