#pragma once
// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length N, N
// bytes of JSON header (UTF-8, padded with spaces so the data starts 8-byte aligned), then the
// data. The header maps each tensor's name to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets within the data, which the tensors cover exactly: no gap, no overlap) and may hold
// "__metadata__", an object of strings. Host code only.
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace vkoptim::detail::safetensors {

enum class DType { F64, F32, BF16, F16, U8 };
const char* dtype_name(DType d);
size_t dtype_bytes(DType d);

// A tensor of a file being written: its bytes are placed at `offset` of the data by the writer.
struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;  // empty: a scalar
  uint64_t offset = 0;          // filled by layout()
  uint64_t bytes() const;
};

// Offsets for `tensors`: the largest element sizes first (in order within a size), so every
// tensor's data is aligned to its element size, as safetensors' own writer does. Returns the
// data size.
uint64_t layout(std::vector<TensorSpec>& tensors);
// The header of tensors laid out by layout(), as JSON text (compact, keys sorted: parsing and
// dumping it again gives the same text).
std::string header_text(const std::vector<TensorSpec>& tensors, const std::map<std::string, std::string>& metadata);
// The file's first bytes: the length and the header text, padded with spaces.
std::vector<uint8_t> header(const std::string& text);

// A tensor of a parsed file: a view of its bytes within the parsed buffer.
struct TensorView {
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;
  std::span<const uint8_t> data;
  uint64_t elements() const;
};
struct File {
  std::string header_text;  // the header parsed and dumped again (canonical: see header_text())
  std::map<std::string, std::string> metadata;
  std::map<std::string, TensorView> tensors;
  std::span<const uint8_t> data;  // everything after the header
};
// Parses and checks the whole structure of `bytes` (which must outlive the result). Throws
// Error(invalid_argument) naming the problem: truncation, a header length beyond the file, a
// header that is not a JSON object in UTF-8, duplicate keys, unknown dtypes, shapes that do not
// match their byte ranges, ranges out of the data, overlapping or leaving gaps.
File parse(std::span<const uint8_t> bytes);

}  // namespace vkoptim::detail::safetensors
