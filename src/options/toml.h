// Options as TOML (toml++ stays inside toml.cpp): reading a file into the
// options that have a key, and printing them back as a file that reads
// back to the same values (`krait daemon --print-config`).
//
// A key "a.b" is key b of section [a]; a kLabels option with key "labels"
// is the whole [labels] table.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "options/option.h"
#include "util/result.h"

namespace krait::options {

// Calls set(i, value) for each key of `text` that is specs[i]'s, in the
// file's order. Errors are one line: "SOURCE:LINE: KEY: what is wrong", and
// any key no spec has is one ("unknown key 'pyroscope.urll'").
Result<void> read_toml(std::string_view text, std::string_view source,
                       const std::vector<const Spec*>& specs,
                       const std::function<void(size_t, const Value&)>& set);

// `header` as a comment, then every spec with a key and its value
// (values[i] is specs[i]'s), each under a comment of its help and flags.
// The keys of one section must be adjacent in `specs`: a section is
// written once, where its first key is.
std::string format_toml(std::string_view header, const std::vector<const Spec*>& specs,
                        const std::vector<Value>& values);

template <typename Target>
Result<void> read_toml(std::string_view text, std::string_view source,
                       const std::vector<Option<Target>>& table, Target& target) {
  std::vector<const Spec*> specs;
  for (const Option<Target>& o : table)
    specs.push_back(&o.spec);
  return read_toml(text, source, specs,
                   [&](size_t i, const Value& value) { table[i].set(target, value); });
}

template <typename Target>
std::string format_toml(std::string_view header, const std::vector<Option<Target>>& table,
                        const Target& target) {
  std::vector<const Spec*> specs;
  std::vector<Value> values;
  for (const Option<Target>& o : table) {
    specs.push_back(&o.spec);
    values.push_back(o.get(target));
  }
  return format_toml(header, specs, values);
}

}  // namespace krait::options
