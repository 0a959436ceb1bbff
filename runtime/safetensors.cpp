// The safetensors format: writing headers, parsing and checking files (safetensors.hpp).
#include "safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "vkoptim/error.hpp"

namespace vkoptim::detail::safetensors {

namespace {

using nlohmann::json;

// safetensors' own limit on the header (100 MB): a longer one is refused before it is read.
constexpr uint64_t kMaxHeader = 100'000'000;
constexpr int kMaxDepth = 8;

[[noreturn]] void refuse(const std::string& what) {
  throw Error(Status::invalid_argument, "checkpoint: " + what);
}

DType dtype_of(const std::string& name, const std::string& key) {
  static const std::pair<const char*, DType> names[] = {
      {"F64", DType::F64}, {"F32", DType::F32}, {"BF16", DType::BF16}, {"F16", DType::F16}, {"U8", DType::U8}};
  for (const auto& [n, d] : names)
    if (name == n) return d;
  refuse("tensor \"" + key + "\" has dtype \"" + name + "\", not one of F64, F32, BF16, F16, U8");
}

// Product of the dims, or refuses when it overflows.
uint64_t element_count(const std::vector<uint64_t>& shape, const std::string& key) {
  uint64_t n = 1;
  for (uint64_t d : shape) {
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / d) refuse("tensor \"" + key + "\"'s shape overflows");
    n *= d;
  }
  return n;
}

}  // namespace

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F64:
      return "F64";
    case DType::F32:
      return "F32";
    case DType::BF16:
      return "BF16";
    case DType::F16:
      return "F16";
    case DType::U8:
      return "U8";
  }
  return "?";
}

size_t dtype_bytes(DType d) {
  switch (d) {
    case DType::F64:
      return 8;
    case DType::F32:
      return 4;
    case DType::BF16:
    case DType::F16:
      return 2;
    case DType::U8:
      return 1;
  }
  return 0;
}

uint64_t TensorSpec::bytes() const {
  uint64_t n = dtype_bytes(dtype);
  for (uint64_t d : shape) n *= d;
  return n;
}

uint64_t TensorView::elements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

uint64_t layout(std::vector<TensorSpec>& tensors) {
  std::vector<TensorSpec*> order;
  for (auto& t : tensors) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(), [](const TensorSpec* a, const TensorSpec* b) {
    return dtype_bytes(a->dtype) > dtype_bytes(b->dtype);
  });
  uint64_t offset = 0;
  for (TensorSpec* t : order) {
    t->offset = offset;
    offset += t->bytes();
  }
  return offset;
}

std::string header_text(const std::vector<TensorSpec>& tensors, const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  for (const auto& t : tensors)
    h[t.name] = {
        {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {t.offset, t.offset + t.bytes()}}};
  return h.dump();
}

std::vector<uint8_t> header(const std::string& header_text) {
  std::string text = header_text;
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  std::vector<uint8_t> out(8 + text.size());
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = uint8_t(n >> (8 * i));
  std::memcpy(out.data() + 8, text.data(), text.size());
  return out;
}

File parse(std::span<const uint8_t> bytes) {
  if (bytes.size() < 8)
    refuse("the file has " + std::to_string(bytes.size()) + " bytes, fewer than the 8 of the header length");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(bytes[size_t(i)]) << (8 * i);
  if (n > bytes.size() - 8)
    refuse("the header length " + std::to_string(n) + " is beyond the file's " + std::to_string(bytes.size()) +
           " bytes (truncated?)");
  if (n > kMaxHeader) refuse("the header length " + std::to_string(n) + " is over 100 MB");
  const auto text = bytes.subspan(8, size_t(n));
  // (JSON text holds no NUL byte; the parser would take one as the end of the input.)
  if (std::find(text.begin(), text.end(), uint8_t(0)) != text.end()) refuse("the header holds a NUL byte");
  // Keys of the top-level object, to refuse duplicates (the parser would keep the last); and the
  // nesting depth (a safetensors header is 3 deep; dumping a deeper value would recurse).
  std::set<std::string> keys;
  std::optional<std::string> duplicate;
  bool too_deep = false;
  json h;
  try {
    h = json::parse(text.begin(), text.end(), [&](int depth, json::parse_event_t event, json& parsed) {
      if (depth > kMaxDepth) too_deep = true;
      if (event == json::parse_event_t::key && depth == 1 && !keys.insert(parsed.get<std::string>()).second)
        duplicate = parsed.get<std::string>();
      return depth <= kMaxDepth;
    });
  } catch (const json::exception& e) {
    refuse(std::string("the header is not JSON in UTF-8: ") + e.what());
  }
  if (too_deep) refuse("the header nests deeper than " + std::to_string(kMaxDepth) + " levels");
  if (duplicate) refuse("the header has the key \"" + *duplicate + "\" twice");
  if (!h.is_object()) refuse("the header is not a JSON object");

  File f;
  f.header_text = h.dump();
  f.data = bytes.subspan(8 + size_t(n));
  struct Range {
    uint64_t begin, end;
    std::string key;
  };
  std::vector<Range> ranges;
  for (const auto& [key, value] : h.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) refuse("__metadata__ is not an object");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) refuse("__metadata__." + k + " is not a string");
        f.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") || !value.contains("data_offsets") ||
        !value["dtype"].is_string() || !value["shape"].is_array() || !value["data_offsets"].is_array() ||
        value["data_offsets"].size() != 2)
      refuse("tensor \"" + key + "\" lacks a string dtype, an array shape or two data_offsets");
    TensorView t;
    t.dtype = dtype_of(value["dtype"].get<std::string>(), key);
    for (const auto& d : value["shape"]) {
      if (!d.is_number_unsigned()) refuse("tensor \"" + key + "\"'s shape holds " + d.dump());
      t.shape.push_back(d.get<uint64_t>());
    }
    const auto& offsets = value["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
      refuse("tensor \"" + key + "\"'s data_offsets are not whole numbers");
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    if (begin > end || end > f.data.size())
      refuse("tensor \"" + key + "\"'s data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
             "] are outside the data's " + std::to_string(f.data.size()) + " bytes");
    const uint64_t elements = element_count(t.shape, key);
    if (elements > (end - begin) || elements * dtype_bytes(t.dtype) != end - begin)
      refuse("tensor \"" + key + "\" has " + std::to_string(end - begin) + " bytes for " + std::to_string(elements) +
             " elements of " + dtype_name(t.dtype));
    t.data = f.data.subspan(size_t(begin), size_t(end - begin));
    ranges.push_back({begin, end, key});
    f.tensors.emplace(key, std::move(t));
  }
  // The tensors cover the data exactly.
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t at = 0;
  for (const auto& r : ranges) {
    if (r.begin < at) refuse("tensor \"" + r.key + "\" overlaps the tensor before it");
    if (r.begin > at)
      refuse("the data has a gap of " + std::to_string(r.begin - at) + " bytes before tensor \"" + r.key + "\"");
    at = r.end;
  }
  if (at != f.data.size())
    refuse("the data has " + std::to_string(f.data.size() - at) + " bytes after the last tensor");
  return f;
}

}  // namespace vkoptim::detail::safetensors
