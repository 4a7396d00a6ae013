#include <map>

#include "cli/commands.h"
#include "record/record.h"

namespace krait::cli {

Runner add_record_command(CLI::App& app) {
  auto opts = std::make_shared<record::RecordOptions>();
  auto duration = std::make_shared<double>(0);
  CLI::App* cmd = app.add_subcommand(
      "record", "Sample Python processes and write a profile (Ctrl-C or SIGTERM stops and writes)");
  cmd->add_option("-d,--duration", *duration, "Seconds to record (default: until Ctrl-C)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("-o,--output", opts->output,
                  "Output file (default: krait-<host>-<time>.pb.gz or .folded)");
  cmd->add_option("-p,--pid", opts->pids, "Profile only these processes (repeatable)");
  cmd->add_option("-r,--rate", opts->frequency_hz, "Samples per second per CPU")
      ->check(CLI::Range(bpf::kMinFrequencyHz, bpf::kMaxFrequencyHz))
      ->capture_default_str();
  std::map<std::string, record::OutputFormat> formats{{"pprof", record::OutputFormat::kPprof},
                                                      {"folded", record::OutputFormat::kFolded}};
  cmd->add_option("-f,--format", opts->format, "pprof (gzipped profile.proto) or folded text")
      ->transform(CLI::CheckedTransformer(formats, CLI::ignore_case));
  cmd->add_option("--max-depth", opts->max_depth, "Python frames per stack; deeper are truncated")
      ->check(CLI::Range(1, KRAIT_PY_FRAMES_CAP))
      ->capture_default_str();
  std::map<std::string, bpf::EventSource> events{{"auto", bpf::EventSource::kAuto},
                                                 {"cycles", bpf::EventSource::kCycles},
                                                 {"cpu-clock", bpf::EventSource::kCpuClock}};
  cmd->add_option("--event", opts->event,
                  "Sampling event: auto (cycles where the host has a PMU, else cpu-clock)")
      ->transform(CLI::CheckedTransformer(events, CLI::ignore_case));
  cmd->add_option("--offsets", opts->offsets_files,
                  "Offsets table for a custom interpreter build (from `krait offsets generate`)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--ready-fd", opts->ready_fd,
                  "Write \"ready\" to this fd once sampling runs (for scripts and tests)");
  std::map<std::string, record::StackMode> stacks{{"python", record::StackMode::kPython},
                                                  {"mixed", record::StackMode::kMixed}};
  cmd->add_option("--stacks", opts->stacks,
                  "mixed: Python, native and kernel frames in one stack (default); python: "
                  "Python frames only")
      ->transform(CLI::CheckedTransformer(stacks, CLI::ignore_case));
  cmd->add_flag("!--no-kernel", opts->kernel_stacks, "Mixed stacks without kernel frames");
  cmd->add_flag("--all-processes", opts->all_processes,
                "Also record processes that are not Python (native and kernel stacks)");
  cmd->add_option("--user-stack-size", opts->user_stack_bytes,
                  "Bytes of user stack copied per sample for native unwinding")
      ->check(CLI::Range(1024, KRAIT_USER_STACK_CAP))
      ->capture_default_str();
  cmd->add_flag("--gil-only", opts->gil_only,
                "Record only threads that hold the GIL (samples are labelled gil=held|released)");
  cmd->add_option("--stats-json", opts->stats_json,
                  "Also write the end-of-run summary (per-process samples, losses, costs) as JSON");
  cmd->add_flag("--measure-sampler-cost", opts->measure_cost,
                "Time every stack walk in the kernel and report its distribution (benchmarks)");
  cmd->add_flag("!--no-builtin-offsets", opts->builtin_offsets,
                "Ignore the built-in offset tables (tests)")
      ->group("");
  return [opts, duration]() -> Result<int> {
    if (*duration > 0)
      opts->duration_s = *duration;
    return record::run_record(*opts);
  };
}

}  // namespace krait::cli
