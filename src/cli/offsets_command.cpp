#include <fmt/format.h>

#include "cli/commands.h"
#include "export/atomic_file.h"
#include "python/offsets/dwarf_generator.h"
#include "python/offsets/offset_table.h"

namespace krait::cli {

Runner add_offsets_command(CLI::App& app) {
  auto binary = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("offsets", "Struct offset tables of CPython builds");
  cmd->require_subcommand(1);
  CLI::App* gen = cmd->add_subcommand(
      "generate", "Write the offsets table of a Python build from its DWARF (for --offsets)");
  gen->add_option("binary", *binary, "python executable or libpython with debug info")
      ->required()
      ->type_name("FILE")
      // Checked, but not described: help shows "FILE", not "TEXT:FILE".
      ->check(CLI::Validator(CLI::ExistingFile).description(""));
  gen->add_option("-o,--output", *output, "Output file (default: standard output)")
      ->type_name("FILE");
  return [binary, output]() -> Result<int> {
    auto table = python::generate_offset_table(*binary);
    if (!table)
      return table.error();
    std::string text = python::format_offset_table(*table);
    if (output->empty()) {
      fmt::print("{}", text);
      return 0;
    }
    KRAIT_TRY(exporter::write_file_atomically(*output, text));
    return 0;
  };
}

}  // namespace krait::cli
