#include "cli/option_flags.h"

#include <fmt/format.h>

namespace krait::cli {

void OptionFlags::add(CLI::App& command, const options::Spec& spec,
                      const std::string& shown_default, const OptionStyle& style) {
  using options::Kind;
  Entry& entry = entries_.emplace_back();
  entry.name = spec.name();
  entry.toggle = spec.kind == Kind::kToggle;
  const std::string help = style.key_in_help && !spec.key.empty()
                               ? fmt::format("{} ({})", spec.help, spec.key)
                               : spec.help;
  const bool list =
      spec.kind == Kind::kList || spec.kind == Kind::kIntegers || spec.kind == Kind::kLabels;
  if (entry.toggle) {
    entry.option = command.add_flag(spec.flags, help);
  } else if (list) {
    entry.option = command.add_option(spec.flags, entry.values, help);
    if (style.repeatable)
      entry.option->allow_extra_args(false);
  } else if (style.repeatable) {
    // One value per flag, every occurrence kept (the last wins later): help
    // then shows "--rate HZ", not the "HZ ..." of a list.
    entry.option = command.add_option(spec.flags, entry.values, help)
                       ->expected(1)
                       ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
                       ->allow_extra_args(false);
  } else {
    entry.single = true;
    entry.option = command.add_option(spec.flags, entry.value, help);
  }
  if (!entry.toggle)
    entry.option->type_name(spec.type_name());
  if (!shown_default.empty())
    entry.option->default_str(shown_default);
  if (spec.hidden)
    entry.option->group("");
  else if (!style.group.empty())
    entry.option->group(style.group);
}

options::GivenFlags OptionFlags::given() const {
  options::GivenFlags given;
  for (const Entry& entry : entries_) {
    if (entry.option->count() == 0)
      continue;
    if (entry.toggle)
      given[entry.name];
    else if (entry.single)
      given[entry.name] = {entry.value};
    else if (!entry.values.empty())
      given[entry.name] = entry.values;
  }
  return given;
}

}  // namespace krait::cli
