#include "symbolize/kernel_symbols.h"

#include <algorithm>
#include <charconv>

#include "util/files.h"

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

}  // namespace

Result<KernelSymbols> KernelSymbols::load(const std::string& path) {
  auto text = read_file(path);
  if (!text)
    return text.error();
  auto symbols = parse(*text);
  if (!symbols)
    return symbols.error().context(path);
  if (symbols->size() > 0 && symbols->symbols_.back().address == 0)
    return make_error(
        "{} shows every kernel address as 0 (kernel.kptr_restrict); run as root to name kernel "
        "frames",
        path);
  return symbols;
}

Result<KernelSymbols> KernelSymbols::parse(std::string_view text) {
  KernelSymbols out;
  std::vector<int> ranks;
  size_t line_number = 0;
  while (!text.empty()) {
    size_t newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    ++line_number;
    if (line.empty())
      continue;
    uint64_t address = 0;
    auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), address, 16);
    size_t pos = static_cast<size_t>(end - line.data());
    if (ec != std::errc() || pos + 3 > line.size() || line[pos] != ' ' || line[pos + 2] != ' ')
      return make_error("kallsyms line {} is not \"<address> <type> <name>\": {}", line_number,
                        line.substr(0, 120));
    char type = line[pos + 1];
    std::string_view rest = line.substr(pos + 3);
    std::string_view module;
    if (size_t tab = rest.find('\t'); tab != std::string_view::npos) {
      module = rest.substr(tab + 1);
      rest = rest.substr(0, tab);
      if (module.size() < 2 || module.front() != '[' || module.back() != ']')
        return make_error("kallsyms line {} has a malformed module name: {}", line_number,
                          line.substr(0, 120));
      module = module.substr(1, module.size() - 2);
    }
    if (rest.empty())
      return make_error("kallsyms line {} has no symbol name", line_number);
    if (!is_text_type(type))
      continue;
    out.symbols_.push_back(
        KernelSymbol{.name = std::string(rest), .module = std::string(module), .address = address});
    ranks.push_back(alias_rank(type, rest));
  }
  // One symbol per address: the best-ranked alias, the first on ties.
  std::vector<size_t> order(out.symbols_.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const KernelSymbol& x = out.symbols_[a];
    const KernelSymbol& y = out.symbols_[b];
    return x.address != y.address ? x.address < y.address : ranks[a] < ranks[b];
  });
  std::vector<KernelSymbol> unique;
  unique.reserve(order.size());
  for (size_t i : order)
    if (unique.empty() || unique.back().address != out.symbols_[i].address)
      unique.push_back(std::move(out.symbols_[i]));
  out.symbols_ = std::move(unique);
  out.ends_.resize(out.symbols_.size());
  for (size_t i = 0; i < out.symbols_.size(); ++i) {
    const KernelSymbol& sym = out.symbols_[i];
    uint64_t cap = sym.address + kMaxLastSymbolSize;
    if (cap < sym.address)
      cap = ~uint64_t{0};
    uint64_t end = i + 1 < out.symbols_.size() ? std::min(cap, out.symbols_[i + 1].address) : cap;
    out.ends_[i] = end;
  }
  return out;
}

const KernelSymbol* KernelSymbols::find(uint64_t address) const {
  auto it = std::upper_bound(symbols_.begin(), symbols_.end(), address,
                             [](uint64_t a, const KernelSymbol& s) { return a < s.address; });
  if (it == symbols_.begin())
    return nullptr;
  --it;
  size_t index = static_cast<size_t>(it - symbols_.begin());
  return address < ends_[index] ? &*it : nullptr;
}

}  // namespace krait::symbolize
