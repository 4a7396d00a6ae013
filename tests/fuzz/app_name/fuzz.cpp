// Application naming and process selection of `krait daemon`
// (daemon/app_name.h, process_filter.h) over a process's command line,
// comm, executable and cgroup: all chosen by whoever started the process
// (one argument may be 128 KiB). The operator's rules are fixed, taken from
// the documentation and tests; the input picks one.
//
// Input: u8 rule (which naming rule and filter, modulo their count),
// u32 length and the raw /proc/PID/cmdline (NUL-separated), u8 length and
// comm, u16 length and the exe link's target, then the /proc/PID/cgroup text.
#include "daemon/app_name.h"
#include "daemon/process_filter.h"
#include "fuzz_input.h"
#include "proc/container.h"

using namespace krait;
using namespace krait::daemon;

namespace {

struct Rule {
  std::string_view name_regex;
  std::string_view name_template;
  ProcessSelection selection;
};

std::vector<std::pair<ApplicationNamer, ProcessFilter>>* rules = nullptr;

void build_rules() {
  const std::vector<Rule> specs = {
      {"", "", {}},
      {R"(--service[= ](\S+))", "", {.names = {"celery", "gunicorn"}}},
      {R"(worker-\d+)",
       "{app}-{container_id}",
       {.cmdline_regex = {R"(--nightly\b)", "^nomatch$"}, .exclude_names = {"beat"}}},
      {R"(-A (\w+))",
       "{app}.{pod_uid}",
       {.cgroups = {"/system.slice/app.service"}, .exclude_cmdline_regex = {"beat"}}},
      {R"(--app=(\S+))",
       "{app}@{process_name}",
       {.cmdline_regex = {"gunicorn .*"},
        .container_ids = {"abcd"},
        .exclude_cmdline_regex = {"--no-profile"}}},
  };
  rules = new std::vector<std::pair<ApplicationNamer, ProcessFilter>>;
  for (const Rule& r : specs) {
    auto namer = ApplicationNamer::create(r.name_regex, r.name_template);
    auto filter = ProcessFilter::create(r.selection);
    if (!namer || !filter)
      std::abort();
    rules->emplace_back(std::move(*namer), std::move(*filter));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  build_rules();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  const auto& [namer, filter] = (*rules)[in.take<uint8_t>() % rules->size()];
  ProcessIdentity process;
  process.pid = 4242;
  process.argv = parse_cmdline(fuzz::FuzzInput::as_string(in.take_bytes(in.take<uint32_t>())));
  process.comm = in.take_string8();
  process.exe = in.take_string16();
  auto container = proc::parse_cgroup(in.rest_text());
  const proc::ContainerInfo info = container ? *container : proc::ContainerInfo{};

  (void)default_application_name(process);
  if (!process.argv.empty())
    (void)is_python_interpreter(process.argv[0]);
  const profile::Labels labels = process_labels(process, "3.12.1", info, {4242, 7}, "host");
  const std::string name = namer.name(process, labels);
  KRAIT_FUZZ_CHECK(!name.empty());
  (void)filter.matches(process, info);
  return 0;
}
