#include "runtime/go_raw.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <vector>

namespace krait::test {
namespace {

using perftools::profiles::Profile;

// One sample reduced to what both readers print, with its location ids
// resolved to their printed text: go may renumber locations and merge equal
// samples, so samples are keyed by content and their values added.
using SampleKey = std::string;  // labels + "\n" + location texts joined by "\n"
using SampleValues = std::vector<int64_t>;

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(' ');
  const size_t e = s.find_last_not_of(' ');
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

void add(std::map<SampleKey, SampleValues>& to, const SampleKey& key, const SampleValues& values) {
  SampleValues& sum = to[key];
  sum.resize(std::max(sum.size(), values.size()));
  for (size_t i = 0; i < values.size(); ++i)
    sum[i] += values[i];
}

// How go tells mappings apart when it merges them: by build-id where there
// is one (sid's three interpreters map one libc from three paths), else by
// file.
std::string mapping_key(const std::string& build_id, const std::string& file) {
  return build_id.empty() ? file : "build-id:" + build_id;
}

// Whether a frame's function text is compared, not only its place: Python
// and synthetic frames, which krait names. go rewrites native names (it
// demangles Rust and C++ symbols krait leaves as they are), so a native or
// kernel frame is compared by its file and offset alone.
bool named_by_krait(const std::string& place) {
  return place.starts_with("[python]+") || place.starts_with("[synthetic]+");
}

std::string place_text(uint64_t address, uint64_t start, uint64_t offset, const std::string& file) {
  if (start != 0 && address >= start)
    address = address - start + offset;
  return fmt::format("{}+{:#x} ", file, address);
}

// What go prints for a location after "<id>: " (its first line only: krait
// writes one Line per location), with the address and mapping id as
// place_text() puts them.
std::string location_text(const Profile& p, const perftools::profiles::Location& loc) {
  auto str = [&](int64_t i) {
    return i >= 0 && i < p.string_table_size() ? p.string_table(static_cast<int>(i))
                                               : std::string("?");
  };
  // An address by its mapping's file and the offset in it: go renumbers
  // mappings when it merges its one input, and merges mappings of one file
  // (libc of two processes), moving their addresses to the one it keeps.
  std::string text = fmt::format("{:#x} ", loc.address());
  for (const auto& m : p.mapping())
    if (loc.mapping_id() != 0 && m.id() == loc.mapping_id())
      text = place_text(loc.address(), m.memory_start(), m.file_offset(),
                        mapping_key(str(m.build_id()), str(m.filename())));
  if (loc.line_size() == 0 || !named_by_krait(text))
    return trim(text);
  for (const auto& fn : p.function())
    if (fn.id() == loc.line(0).function_id()) {
      text += fmt::format("{} {}:{} s={}", str(fn.name()), str(fn.filename()), loc.line(0).line(),
                          fn.start_line());
      if (str(fn.name()) != str(fn.system_name()))
        text += "(" + str(fn.system_name()) + ")";
      return trim(text);
    }
  return trim(text + "??");
}

std::string labels_text(const Profile& p, const perftools::profiles::Sample& s) {
  std::map<std::string, std::vector<std::string>> by_key;
  for (const auto& label : s.label())
    if (label.str() != 0)
      by_key[p.string_table(static_cast<int>(label.key()))].push_back(
          p.string_table(static_cast<int>(label.str())));
  std::string text;
  for (const auto& [key, values] : by_key)
    text += fmt::format("{}{}:[{}]", text.empty() ? "" : " ", key, fmt::join(values, " "));
  return text;
}

std::map<SampleKey, SampleValues> krait_view(const Profile& p) {
  std::map<uint64_t, std::string> locations;
  for (const auto& loc : p.location())
    locations[loc.id()] = location_text(p, loc);
  std::map<SampleKey, SampleValues> out;
  for (const auto& s : p.sample()) {
    SampleKey key = labels_text(p, s);
    for (uint64_t id : s.location_id())
      key += "\n" + locations[id];
    add(out, key, SampleValues(s.value().begin(), s.value().end()));
  }
  return out;
}

Result<std::map<SampleKey, SampleValues>> go_view(const std::string& raw) {
  std::vector<std::string> lines;
  {
    std::istringstream in(raw);
    for (std::string line; std::getline(in, line);)
      lines.push_back(line);
  }
  auto find = [&](const std::string& header) {
    return std::find(lines.begin(), lines.end(), header) - lines.begin();
  };
  const size_t samples_at = static_cast<size_t>(find("Samples:"));
  const size_t locations_at = static_cast<size_t>(find("Locations"));
  if (samples_at >= lines.size() || locations_at >= lines.size() || locations_at < samples_at)
    return make_error("go tool pprof -raw printed no Samples:/Locations sections");
  // "1: 0x41f000/0x6d2000/0x41f000 /usr/bin/python3.11 571d98e0... [FN]"
  const size_t mappings_at = static_cast<size_t>(find("Mappings"));
  struct GoMapping {
    uint64_t start = 0, offset = 0;
    std::string file;
  };
  std::map<std::string, GoMapping> mappings;  // by id
  for (size_t i = mappings_at + 1; i < lines.size(); ++i) {
    // "<id>: <range> <file> <build-id> <flags>": the file may hold spaces
    // ("/memfd:x (deleted)"), the build-id and the flags do not, and either
    // may be empty.
    std::istringstream words(lines[i]);
    std::string id, range;
    GoMapping m;
    if (!(words >> id >> range) || !id.ends_with(':'))
      continue;
    std::string rest = lines[i].substr(lines[i].find(range) + range.size());
    if (rest.starts_with(' '))
      rest.erase(0, 1);
    const size_t flags = rest.rfind(' ');
    if (flags == std::string::npos)
      continue;
    rest.erase(flags);  // " [FN][FL]", or " " when there are no flags
    const size_t build = rest.rfind(' ');
    if (build == std::string::npos)
      continue;
    m.file = mapping_key(rest.substr(build + 1), rest.substr(0, build));
    // "0x41f000/0x6d2000/0x41f000": start, limit, file offset
    std::replace(range.begin(), range.end(), '/', ' ');
    std::istringstream numbers(range);
    uint64_t limit = 0;
    numbers >> std::hex >> m.start >> limit >> m.offset;
    mappings[id.substr(0, id.size() - 1)] = m;
  }
  // "     12: 0x5236ba M=1 PyEval_EvalCode :0 s=0"
  std::map<uint64_t, std::string> locations;
  for (size_t i = locations_at + 1; i < mappings_at && i < lines.size(); ++i) {
    const std::string& line = lines[i];
    const size_t colon = line.find(": ");
    const std::string id = trim(line.substr(0, colon == std::string::npos ? 0 : colon));
    if (id.empty() || !std::all_of(id.begin(), id.end(), ::isdigit))
      continue;  // a further (inlined) line of the location above
    std::string text = trim(line.substr(colon + 2));
    // "0x5236ba M=1 rest" -> "<file>+<offset> rest"
    std::istringstream words(text);
    std::string address, mapping;
    if (words >> address >> mapping && mapping.starts_with("M=")) {
      auto m = mappings.find(mapping.substr(2));
      if (m != mappings.end()) {
        const size_t rest = text.find(' ', text.find(" M=") + 1);
        const std::string place = place_text(std::stoull(address, nullptr, 16), m->second.start,
                                             m->second.offset, m->second.file);
        text = trim(place + (rest == std::string::npos || !named_by_krait(place)
                                 ? ""
                                 : text.substr(rest + 1)));
      }
    }
    locations[std::stoull(id)] = text;
  }
  // "        278 2808080780: 1 2 3 " then an indented label line
  std::map<SampleKey, SampleValues> out;
  for (size_t i = samples_at + 2; i < locations_at; ++i) {
    const std::string& line = lines[i];
    const size_t colon = line.find(": ");
    if (colon == std::string::npos || line.find(":[") != std::string::npos)
      return make_error("unexpected sample line in go's output: '{}'", line);
    SampleValues values;
    std::istringstream value_text(line.substr(0, colon));
    for (int64_t v; value_text >> v;)
      values.push_back(v);
    std::string labels;
    if (i + 1 < locations_at && lines[i + 1].find(":[") != std::string::npos)
      labels = trim(lines[++i]);
    SampleKey key = labels;
    std::istringstream ids(line.substr(colon + 2));
    for (uint64_t id; ids >> id;) {
      auto it = locations.find(id);
      if (it == locations.end())
        return make_error("go's sample '{}' names location {}, which it did not list", line, id);
      key += "\n" + it->second;
    }
    add(out, key, values);
  }
  return out;
}

std::string describe(const SampleKey& key, const SampleValues& values) {
  return fmt::format("values [{}] labels {}", fmt::join(values, " "), [&] {
    std::string k = key;
    std::replace(k.begin(), k.end(), '\n', '|');
    return k;
  }());
}

}  // namespace

Result<void> same_samples_as_go(const std::string& go_raw, const Profile& p) {
  auto go = go_view(go_raw);
  if (!go)
    return go.error();
  const auto mine = krait_view(p);
  for (const auto& [key, values] : mine) {
    auto it = go->find(key);
    if (it == go->end())
      return make_error("go tool pprof -raw does not show krait's sample: {}",
                        describe(key, values));
    if (it->second != values)
      return make_error("go tool pprof -raw shows other values ({}) for krait's sample: {}",
                        fmt::join(it->second, " "), describe(key, values));
  }
  for (const auto& [key, values] : *go)
    if (!mine.contains(key))
      return make_error("go tool pprof -raw shows a sample krait's decoder does not: {}",
                        describe(key, values));
  return {};
}

}  // namespace krait::test
