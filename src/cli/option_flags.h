// The command-line edge of the option model (options/option.h): turns a
// command's options into CLI11 options, and what CLI11 parsed back into
// options::GivenFlags, which the model checks. CLI11 sees only text, so a
// bad value is reported by the model as one line naming the flag, the same
// for every command.
//
// Ownership: an OptionFlags must outlive the parse (CLI11 writes into it)
// and be read with given() after it.
#pragma once

#include <CLI/CLI.hpp>
#include <deque>
#include <string>
#include <vector>

#include "options/option.h"

namespace krait::cli {

// How one command shows its options.
struct OptionStyle {
  std::string group;         // --help section; empty: CLI11's "Options"
  bool key_in_help = false;  // append the TOML key: "Samples per second per CPU (sampling.rate_hz)"
  // Every option may be repeated, one value per flag (the last wins): the
  // daemon's flags override its file. Otherwise a value flag is given
  // once and a list flag takes every value after it (`-p 1 2 3`).
  bool repeatable = false;
};

class OptionFlags {
 public:
  template <typename Target>
  void add(CLI::App& command, const std::vector<options::Option<Target>>& table,
           const OptionStyle& style) {
    const Target defaults{};
    for (const options::Option<Target>& option : table)
      add(command, option.spec,
          option.show_default ? options::value_text(option.spec, option.get(defaults)) : "", style);
  }

  // One option; `shown_default` is shown after its placeholder when not empty.
  void add(CLI::App& command, const options::Spec& spec, const std::string& shown_default,
           const OptionStyle& style);

  // The options given on the command line, by Spec::name().
  options::GivenFlags given() const;

 private:
  struct Entry {
    std::string name;
    bool toggle = false;
    bool single = false;              // `value` holds it
    std::string value;                // a value flag given once
    std::vector<std::string> values;  // lists, and every flag when repeatable
    CLI::Option* option = nullptr;
  };
  std::deque<Entry> entries_;  // a deque: CLI11 keeps pointers into entries
};

}  // namespace krait::cli
