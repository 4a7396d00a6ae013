#include "symbolize/kernel_symbols.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <unordered_map>

#include "util/files.h"
#include "util/text.h"

namespace krait::symbolize {
namespace {

bool is_text_type(char type) {
  return type == 't' || type == 'T' || type == 'w' || type == 'W';
}

// Lower is better among symbols sharing an address: global before local,
// the x86_64 name before compat and padding aliases (__ia32_sys_getpid,
// __pfx_...), fewer leading underscores (__x64_sys_getpid over
// __do_sys_getpid is settled by globality).
int alias_rank(char type, std::string_view name) {
  int rank = (type == 'T' || type == 'W') ? 0 : 100;
  if (name.starts_with("__ia32_") || name.starts_with("__pfx_"))
    rank += 50;
  size_t underscores = name.find_first_not_of('_');
  rank += static_cast<int>(
      std::min<size_t>(underscores == std::string_view::npos ? 0 : underscores, 9));
  return rank;
}

// A text symbol as read: its name is still a view into the text.
struct Candidate {
  uint64_t address;
  std::string_view name;
  uint16_t module;
  int rank;
};

// One line of kallsyms: "<address> <type> <name>[\t[<module>]]".
struct KallsymsLine {
  uint64_t address = 0;
  char type = 0;
  std::string_view name;
  std::string_view module;  // "" for the core kernel
};

Result<KallsymsLine> parse_line(std::string_view line, size_t line_number) {
  KallsymsLine out;
  auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), out.address, 16);
  size_t pos = static_cast<size_t>(end - line.data());
  if (ec != std::errc() || pos + 3 > line.size() || line[pos] != ' ' || line[pos + 2] != ' ')
    return make_error("kallsyms line {} is not \"<address> <type> <name>\": {}", line_number,
                      line.substr(0, 120));
  out.type = line[pos + 1];
  std::string_view rest = line.substr(pos + 3);
  if (size_t tab = rest.find('\t'); tab != std::string_view::npos) {
    std::string_view module = rest.substr(tab + 1);
    rest = rest.substr(0, tab);
    if (module.size() < 2 || module.front() != '[' || module.back() != ']')
      return make_error("kallsyms line {} has a malformed module name: {}", line_number,
                        line.substr(0, 120));
    out.module = module.substr(1, module.size() - 2);
  }
  if (rest.empty())
    return make_error("kallsyms line {} has no symbol name", line_number);
  if (rest.size() > UINT16_MAX)
    return make_error("kallsyms line {} has a name of {} bytes", line_number, rest.size());
  out.name = rest;
  return out;
}

// Every text symbol of `text`, with its module's index in `modules`
// (which holds the core kernel, "", first; new modules are appended).
Result<std::vector<Candidate>> read_candidates(std::string_view text,
                                               std::vector<std::string>& modules) {
  std::unordered_map<std::string_view, uint16_t> module_index;
  std::vector<Candidate> candidates;
  size_t line_number = 0;
  while (!text.empty()) {
    std::string_view line = take_line(text);
    ++line_number;
    if (line.empty())
      continue;
    auto parsed = parse_line(line, line_number);
    if (!parsed)
      return parsed.error();
    if (!is_text_type(parsed->type))
      continue;
    uint16_t module_id = 0;
    if (!parsed->module.empty()) {
      auto [it, inserted] =
          module_index.try_emplace(parsed->module, static_cast<uint16_t>(modules.size()));
      if (inserted) {
        if (modules.size() > UINT16_MAX)
          return make_error("kallsyms names more than {} modules", UINT16_MAX);
        modules.emplace_back(parsed->module);
      }
      module_id = it->second;
    }
    candidates.push_back(
        {parsed->address, parsed->name, module_id, alias_rank(parsed->type, parsed->name)});
  }
  return candidates;
}

}  // namespace

Result<KernelSymbols> KernelSymbols::load(const std::string& path) {
  // /proc/kallsyms is some 10-20 MiB on kernels with many modules.
  constexpr size_t kKallsymsMaxBytes = size_t{256} << 20;
  auto text = read_file(path, kKallsymsMaxBytes);
  if (!text)
    return text.error();
  auto symbols = parse(*text);
  if (!symbols)
    return symbols.error().context(path);
  if (symbols->size() > 0 && symbols->entries_.back().address == 0)
    return make_error(
        "{} shows every kernel address as 0 (kernel.kptr_restrict); run as root to name kernel "
        "frames",
        path);
  return symbols;
}

Result<KernelSymbols> KernelSymbols::parse(std::string_view text) {
  KernelSymbols out;
  out.modules_.emplace_back();
  auto candidates = read_candidates(text, out.modules_);
  if (!candidates)
    return candidates.error();
  // One symbol per address: the best-ranked alias, the first on ties.
  std::stable_sort(candidates->begin(), candidates->end(),
                   [](const Candidate& x, const Candidate& y) {
                     return x.address != y.address ? x.address < y.address : x.rank < y.rank;
                   });
  for (const Candidate& c : *candidates) {
    if (!out.entries_.empty() && out.entries_.back().address == c.address)
      continue;
    if (out.names_.size() + c.name.size() > UINT32_MAX)
      return make_error("kallsyms names take more than 4 GiB");
    out.entries_.push_back(Entry{.address = c.address,
                                 .name_offset = static_cast<uint32_t>(out.names_.size()),
                                 .name_size = static_cast<uint16_t>(c.name.size()),
                                 .module = c.module});
    out.names_.append(c.name);
  }
  out.entries_.shrink_to_fit();
  out.names_.shrink_to_fit();
  out.ends_.resize(out.entries_.size());
  for (size_t i = 0; i < out.entries_.size(); ++i) {
    const uint64_t address = out.entries_[i].address;
    uint64_t cap = address + kMaxLastSymbolSize;
    if (cap < address)
      cap = ~uint64_t{0};
    out.ends_[i] = i + 1 < out.entries_.size() ? std::min(cap, out.entries_[i + 1].address) : cap;
  }
  return out;
}

std::optional<KernelSymbol> KernelSymbols::find(uint64_t address) const {
  auto it = std::upper_bound(entries_.begin(), entries_.end(), address,
                             [](uint64_t a, const Entry& e) { return a < e.address; });
  if (it == entries_.begin())
    return std::nullopt;
  --it;
  const size_t index = static_cast<size_t>(it - entries_.begin());
  if (address >= ends_[index])
    return std::nullopt;
  return KernelSymbol{.name = std::string_view(names_).substr(it->name_offset, it->name_size),
                      .module = modules_[it->module],
                      .address = it->address};
}

}  // namespace krait::symbolize
