// The daemon's TOML configuration (daemon/config.h): parse_config_toml over
// a file's text, validate, and the --print-config round trip. The file is
// the operator's (trusted), but a typo or a damaged file must give an
// error, never a crash or a hang.
//
// Input: the file's text.
// Checks, besides memory safety: format_config_toml of an accepted
// configuration reads back equal, as the header promises.
#include "daemon/config.h"
#include "fuzz_input.h"

using namespace krait;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logging();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  auto config = daemon::parse_config_toml(in.rest_text(), "fuzz.toml");
  if (!config)
    return 0;
  (void)daemon::validate(*config);
  const std::string text = daemon::format_config_toml(*config);
  auto again = daemon::parse_config_toml(text, "printed");
  KRAIT_FUZZ_CHECK(again.ok());
  KRAIT_FUZZ_CHECK(*again == *config);
  return 0;
}
