#include "python/interpreter.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <set>
#include <string_view>

#include "util/text.h"

namespace krait::python {
namespace {

std::string basename(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Extension modules ("_socket.cpython-311-x86_64-linux-gnu.so", PEP 3149)
// are never the interpreter: a process imports dozens, and counted as
// candidates they would use up kMaxCandidates before libpython, which
// dlopen'ed modules precede in the map (mmap places them below it).
bool looks_like_python_file(const std::string& name) {
  return name.find("python") != std::string::npos && name.find(".cpython-") == std::string::npos;
}

bool is_digit(uint8_t c) {
  return c >= '0' && c <= '9';
}

// The name of a mapped file is chosen by whoever created the file, and the
// strings in its .rodata too: both are parsed by hand, in one pass, and a
// number too large for an int is "no answer", never an exception.

// "python3.9", "libpython3.6m.so.1.0", "python3.12d" -> 3.9 / 3.6 / 3.12:
// the first "python" followed by "2." or "3." and a digit gives the major
// version and all the digits that follow as the minor one.
std::optional<std::pair<int, int>> minor_from_name(std::string_view name) {
  constexpr std::string_view kPython = "python";
  for (size_t at = name.find(kPython); at != std::string_view::npos;
       at = name.find(kPython, at + 1)) {
    const std::string_view rest = name.substr(at + kPython.size());
    if (rest.size() < 3 || (rest[0] != '2' && rest[0] != '3') || rest[1] != '.' ||
        !is_digit(rest[2]))
      continue;
    size_t end = 2;
    while (end < rest.size() && is_digit(rest[end]))
      ++end;
    auto minor = parse_unsigned<unsigned>(rest.substr(2, end - 2));
    if (!minor || *minor > INT_MAX)
      return std::nullopt;  // python3.99999999999: the name tells nothing
    return std::pair{rest[0] - '0', static_cast<int>(*minor)};
  }
  return std::nullopt;
}

// "M.m.p" and nothing else, with M 2 or 3, m one or two digits, p one to
// three: the major and minor version.
std::optional<std::pair<int, int>> parse_version_tail(std::string_view text) {
  if (text.size() < 5 || (text[0] != '2' && text[0] != '3') || text[1] != '.')
    return std::nullopt;
  size_t minor_end = 2;
  while (minor_end < text.size() && is_digit(text[minor_end]))
    ++minor_end;
  const size_t minor_digits = minor_end - 2;
  if (minor_digits < 1 || minor_digits > 2 || minor_end == text.size() || text[minor_end] != '.')
    return std::nullopt;
  const std::string_view micro = text.substr(minor_end + 1);
  if (micro.empty() || micro.size() > 3 || !parse_unsigned<unsigned>(micro))
    return std::nullopt;
  auto minor = parse_unsigned<unsigned>(text.substr(2, minor_digits));
  if (!minor)
    return std::nullopt;
  return std::pair{text[0] - '0', static_cast<int>(*minor)};
}

// A real libpython's .rodata is a few MiB; a file's section header may
// claim anything, and the section is read whole.
constexpr uint64_t kMaxRodataBytes = uint64_t{64} << 20;

// PY_VERSION ("3.9.18") is a string literal in .rodata, but the linker may
// merge it into the tail of a longer string ("/build/Python-3.9.18"), so
// versions are looked for at the end of every NUL-terminated string.
Result<std::map<std::string, int>> version_strings(const elf::ElfFile& elf, const std::string& path,
                                                   std::optional<std::pair<int, int>> mm) {
  std::map<std::string, int> found;  // version -> 2 when standalone, else 1
  if (auto section = elf.find_section(".rodata"); section && section->size > kMaxRodataBytes)
    return make_error(
        "{} has a .rodata section of {} bytes, more than the {} bytes krait reads to find the "
        "Python version; not a CPython build krait can use",
        path, section->size, kMaxRodataBytes);
  auto rodata = elf.section_bytes(".rodata");
  if (!rodata)
    return found;
  const auto& bytes = *rodata;
  size_t i = 0;
  while (i < bytes.size()) {
    size_t j = i;
    while (j < bytes.size() && bytes[j] != 0)
      ++j;
    // The version is at most "3.14.123": look at the last 9 bytes only.
    size_t from = j - i > 9 ? j - 9 : i;
    while (from < j &&
           !(bytes[from] >= '2' && bytes[from] <= '3' && from + 1 < j && bytes[from + 1] == '.' &&
             (from == i || !(is_digit(bytes[from - 1]) || bytes[from - 1] == '.'))))
      ++from;
    if (from < j) {
      const std::string_view tail(reinterpret_cast<const char*>(bytes.data() + from), j - from);
      auto version = parse_version_tail(tail);
      if (version && (!mm || *version == *mm)) {
        int& score = found[std::string(tail)];
        score = std::max(score, from == i ? 2 : 1);
      }
    }
    i = j + 1;
  }
  return found;
}

Result<PyVersion> image_version(const elf::ElfFile& elf, const std::string& path) {
  if (auto sym = elf.find_symbol("Py_Version")) {
    auto bytes = elf.read_vaddr(sym->value, 4);
    if (bytes) {
      uint32_t hex = 0;
      std::memcpy(&hex, bytes->data(), 4);
      return PyVersion::from_hex(hex);
    }
  }
  auto mm = minor_from_name(basename(path));
  auto candidates = version_strings(elf, path, mm);
  if (!candidates)
    return candidates.error();
  // A standalone literal beats a string tail; one distinct answer is needed.
  std::vector<std::string> best;
  int best_score = 0;
  for (const auto& [text, score] : *candidates) {
    if (score > best_score) {
      best = {text};
      best_score = score;
    } else if (score == best_score) {
      best.push_back(text);
    }
  }
  if (best.size() == 1) {
    if (auto v = PyVersion::parse(best.front()))
      return *v;
  }
  return make_error("cannot tell which Python version {} is ({} candidate version strings)", path,
                    candidates->size());
}

// Stripped 2.7/3.6 builds have no interp_head symbol, but the exported
// PyInterpreterState_Head() is `mov rax, [rip+disp32]; ret` around it.
std::optional<uint64_t> interp_head_from_code(const elf::ElfFile& elf) {
  auto fn = elf.find_symbol("PyInterpreterState_Head");
  if (!fn)
    return std::nullopt;
  auto code = elf.read_vaddr(fn->value, 8);
  if (!code)
    return std::nullopt;
  const auto& c = *code;
  if (c[0] == 0x48 && c[1] == 0x8b && c[2] == 0x05 && c[7] == 0xc3) {
    int32_t disp = 0;
    std::memcpy(&disp, c.data() + 3, 4);
    return fn->value + 7 + static_cast<int64_t>(disp);
  }
  return std::nullopt;
}

}  // namespace

Result<std::optional<InterpreterImage>> analyze_image(std::shared_ptr<const elf::ElfFile> elf,
                                                      const std::string& mapped_path) {
  auto runtime = elf->find_symbol("_PyRuntime");
  auto head_fn = elf->find_symbol("PyInterpreterState_Head");
  if (!runtime && !head_fn)
    return std::optional<InterpreterImage>{};

  InterpreterImage img;
  img.path = mapped_path;
  img.build_id = elf->build_id();
  img.stripped = !elf->has_symtab();
  img.shared_library = basename(mapped_path).starts_with("libpython") || !elf->soname().empty();
  auto version = image_version(*elf, mapped_path);
  if (!version)
    return version.error();
  img.version = *version;

  auto code_type = elf->find_symbol("PyCode_Type");
  if (!code_type)
    return make_error("{} does not export PyCode_Type", mapped_path);
  img.code_type_vaddr = code_type->value;

  if (img.version >= PyVersion{3, 7, 0}) {
    if (!runtime)
      return make_error("{} (Python {}) has no _PyRuntime symbol", mapped_path, img.version.str());
    img.runtime_vaddr = runtime->value;
  } else {
    if (auto current = elf->find_symbol("_PyThreadState_Current"))
      img.current_tstate_vaddr = current->value;
    if (auto head = elf->find_symbol("interp_head"))
      img.interp_head_vaddr = head->value;
    else if (auto h = interp_head_from_code(*elf))
      img.interp_head_vaddr = *h;
    else
      return make_error("cannot find interp_head in {} (Python {})", mapped_path,
                        img.version.str());
  }
  img.elf = std::move(elf);
  return std::optional<InterpreterImage>{std::move(img)};
}

std::shared_ptr<const ImageCache::Entry> ImageCache::analyze(pid_t pid, const proc::MapEntry& map) {
  Key key{map.dev_major, map.dev_minor, map.inode};
  {
    std::lock_guard lock(mutex_);
    auto it = images_.find(key);
    if (it != images_.end()) {
      it->second->last_used = ++clock_;
      return it->second;
    }
  }

  auto entry = std::make_shared<Entry>();
  auto elf = proc::open_mapped_elf(pid, map);
  if (!elf && looks_like_python_file(basename(map.path))) {
    // Named like an interpreter but unreadable (permissions, a deleted file
    // without map_files access): say so rather than skip the process.
    entry->error = elf.error().context("cannot open " + map.path).message;
  }
  if (elf) {
    for (const auto& lib : elf->needed())
      if (lib.starts_with("libpython"))
        entry->needs_libpython = true;
    auto shared = std::make_shared<const elf::ElfFile>(std::move(*elf));
    auto image = analyze_image(std::move(shared), map.path);
    if (image)
      entry->image = std::move(*image);
    else
      entry->error = image.error().message;
  }
  // Files that cannot be opened or parsed are remembered as not Python: a
  // later exec of a replaced file has a new inode.
  std::lock_guard lock(mutex_);
  auto [it, inserted] = images_.emplace(key, entry);
  it->second->last_used = ++clock_;
  if (inserted && images_.size() > kMaxImages) {
    auto oldest = images_.begin();
    for (auto i = images_.begin(); i != images_.end(); ++i)
      if (i->second->last_used < oldest->second->last_used)
        oldest = i;
    images_.erase(oldest);
  }
  return it->second;
}

size_t ImageCache::size() const {
  std::lock_guard lock(mutex_);
  return images_.size();
}

FindResult ImageCache::find(pid_t pid) {
  FindResult result;
  auto maps = proc::read_maps(pid);
  if (!maps) {
    result.status = FindStatus::kGone;
    result.reason = maps.error().message;
    return result;
  }
  if (maps->empty()) {
    result.status = FindStatus::kNotPython;  // kernel thread
    return result;
  }
  // Candidates: the main executable (embedders may link Python statically)
  // and every file with "python" in its name; other libraries are skipped
  // without opening them.
  std::string exe_path;
  for (const auto& m : *maps)
    if (!m.path.empty() && m.path[0] == '/') {
      exe_path = m.path;
      break;
    }
  bool needs_libpython = false;
  std::set<Key> seen;
  for (const auto& m : *maps) {
    if (m.path.empty() || m.path[0] != '/' || m.inode == 0)
      continue;
    if (m.path != exe_path && !looks_like_python_file(basename(m.path)))
      continue;
    if (!seen.insert(Key{m.dev_major, m.dev_minor, m.inode}).second)
      continue;
    if (seen.size() > kMaxCandidates) {
      if (result.status != FindStatus::kUnusable) {
        result.status = FindStatus::kUnusable;
        result.reason = fmt::format("maps more than {} files named like python", kMaxCandidates);
      }
      break;
    }
    std::shared_ptr<const Entry> held = analyze(pid, m);
    const Entry& e = *held;
    if (m.path == exe_path)
      needs_libpython = e.needs_libpython;
    if (!e.image) {
      if (!e.error.empty()) {
        result.status = FindStatus::kUnusable;
        result.reason = e.error;
      }
      continue;
    }
    auto file_maps = proc::maps_of_file(*maps, m);
    auto bias = proc::load_bias(file_maps, *e.image->elf);
    if (!bias) {
      result.status = FindStatus::kUnusable;
      result.reason = bias.error().message;
      continue;
    }
    ProcessInterpreter pi;
    pi.image = *e.image;
    pi.load_bias = *bias;
    pi.code_type_addr = *bias + pi.image.code_type_vaddr;
    if (pi.image.runtime_vaddr)
      pi.runtime_addr = *bias + pi.image.runtime_vaddr;
    if (pi.image.current_tstate_vaddr)
      pi.current_tstate_addr = *bias + pi.image.current_tstate_vaddr;
    if (pi.image.interp_head_vaddr)
      pi.interp_head_var = *bias + pi.image.interp_head_vaddr;
    result.status = FindStatus::kFound;
    result.interpreter = std::move(pi);
    result.reason.clear();
    return result;
  }
  if (result.status != FindStatus::kUnusable && needs_libpython) {
    result.status = FindStatus::kNotYet;
    result.reason = "libpython is not mapped yet";
  }
  return result;
}

}  // namespace krait::python
