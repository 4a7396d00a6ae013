// Oracles the format tests share: what a profile's samples look like from
// the outside (per thread, per stack), derived from the fixture's plain
// data and the conventions written in export/speedscope.h and
// export/flamegraph_html.h, not from the exporters' code; and readers of
// what the exporters wrote.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "fixture_profile.h"
#include "profile/profile.h"
#include "support/json.h"
#include "util/result.h"

namespace krait::test {

// (name, file, line) as speedscope shows a frame; (name, file, line, kind)
// as the HTML page does.
using ShownFrame = std::tuple<std::string, std::string, int64_t>;
using PageFrame = std::tuple<std::string, std::string, int64_t, std::string>;

// Thread title -> root-first stack -> weight.
using ThreadStacks = std::map<std::string, std::map<std::vector<ShownFrame>, int64_t>>;
// (process title, thread title, root-first stack) -> samples.
using PageStacks = std::map<std::tuple<std::string, std::string, std::vector<PageFrame>>, int64_t>;

// The facts of every (stack, labels) of a profile, summed.
std::map<std::pair<std::vector<FrameFacts>, profile::Labels>, uint64_t> facts_of(
    const profile::Profile& profile);

// "<name> (<id>)" of a label set's process or thread, as the headers say.
std::string owner_title(const profile::Labels& labels, const std::string& name_key,
                        const std::string& id_key);

// What speedscope.h promises for a fixture whose samples are `expected`.
ThreadStacks expected_speedscope(
    const std::map<std::pair<std::vector<FrameFacts>, profile::Labels>, uint64_t>& expected,
    int64_t period_ns);
// The stacks a speedscope document holds; an error when it is malformed.
Result<ThreadStacks> speedscope_stacks(const JsonValue& doc);

// What flamegraph_html.h promises.
PageStacks expected_page(
    const std::map<std::pair<std::vector<FrameFacts>, profile::Labels>, uint64_t>& expected);
// The JSON text inside the page's #krait-data script element.
Result<std::string> page_data_text(const std::string& html);
// Self counts of the page's call tree, by path; an error when malformed.
Result<PageStacks> page_stacks(const JsonValue& data);

// The same stacks with every unsymbolized name ("[libc.so.6+0x1234]",
// "[0x...]", with or without "_[k]") written "[address]", for recordings
// whose mappings the oracle does not know; weights of stacks that become
// equal are added.
ThreadStacks without_addresses(const ThreadStacks& stacks);
PageStacks without_addresses(const PageStacks& stacks);

}  // namespace krait::test
