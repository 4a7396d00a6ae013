// Decodes the code_reader seeds: see tests/fuzz/code_reader/fuzz_memory.h
// for the format.
#include "process_image.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>

#include "python/offsets/debug_offsets.h"
#include "python/offsets/offset_table.h"

namespace krait::python {
namespace {

class Reader {
 public:
  explicit Reader(std::string bytes) : bytes_(std::move(bytes)) {}
  template <typename T>
  T take() {
    T v{};
    if (pos_ + sizeof v <= bytes_.size())
      std::memcpy(&v, bytes_.data() + pos_, sizeof v);
    else
      short_ = true;
    pos_ += sizeof v;
    return v;
  }
  std::vector<uint8_t> take_bytes(size_t n) {
    if (pos_ + n > bytes_.size()) {
      short_ = true;
      pos_ = bytes_.size();
      return {};
    }
    std::vector<uint8_t> out(bytes_.begin() + static_cast<ptrdiff_t>(pos_),
                             bytes_.begin() + static_cast<ptrdiff_t>(pos_ + n));
    pos_ += n;
    return out;
  }
  bool short_read() const { return short_; }

 private:
  std::string bytes_;
  size_t pos_ = 0;
  bool short_ = false;
};

}  // namespace

Result<ProcessImage> load_image(const std::string& name) {
  const std::string path = std::string(KRAIT_CODE_READER_CORPUS) + "/" + name;
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return make_error("cannot open {}", path);
  Reader r(std::string(std::istreambuf_iterator<char>(in), {}));
  ProcessImage image;
  image.name = name;
  const auto flags = r.take<uint8_t>();
  (void)r.take<uint8_t>();  // the table's index when recorded: found by version below
  const auto debug = r.take_bytes(r.take<uint16_t>());
  image.code_type = r.take<uint64_t>();
  image.code = r.take<uint64_t>();
  (void)r.take<uint32_t>();  // token: the seeds have it recomputed from memory
  image.instr = r.take<uint32_t>();
  image.frame = r.take<uint64_t>();
  image.interp_head = r.take<uint64_t>();
  const auto capture = r.take_bytes(r.take<uint16_t>());
  std::memcpy(&image.capture, capture.data(), std::min(capture.size(), sizeof image.capture));
  const auto regions = r.take<uint8_t>();
  for (unsigned i = 0; i < regions; ++i) {
    const auto address = r.take<uint64_t>();
    image.memory.add(address, r.take_bytes(r.take<uint32_t>()));
  }
  if (r.short_read())
    return make_error("{}: truncated", path);

  // "<source>-<version>-<table|debug>"
  const size_t first = name.find('-'), last = name.rfind('-');
  auto version = PyVersion::parse(name.substr(first + 1, last - first - 1));
  if (!version)
    return make_error("{}: no version in the name", name);
  image.version = *version;
  std::optional<OffsetTable> decoded;
  const OffsetTable* table = nullptr;
  if (flags & 1) {
    auto t = decode_debug_offsets(debug);
    if (!t)
      return t.error().context(name);
    decoded = std::move(*t);
    table = &*decoded;
  } else {
    table = find_table(*version);
    if (!table)
      table = nearest_table_same_minor(*version);
    if (!table)
      return make_error("{}: no built-in table", name);
  }
  auto layout = build_layout(*table, *version);
  if (!layout)
    return layout.error().context(name);
  image.layout = std::move(*layout);
  return image;
}

Result<uint64_t> first_interpreter(const ProcessImage& image) {
  auto interp = image.memory.read_value<uint64_t>(image.interp_head);
  if (!interp)
    return interp.error().context("interpreter list");
  return *interp;
}

Result<uint64_t> first_thread(const ProcessImage& image) {
  auto interp = first_interpreter(image);
  KRAIT_TRY(interp);
  auto tstate = image.memory.read_value<uint64_t>(*interp + image.layout.bpf.interp_tstate_head);
  if (!tstate)
    return tstate.error().context("thread list");
  return *tstate;
}

}  // namespace krait::python
