// The processes /proc lists, and the name the kernel keeps for each.
//
// Both read files a profiled process can change (its comm, with prctl) or
// that come and go under us (pids): neither throws, and a pid that vanished
// between the scan and the read is simply an error.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "util/result.h"

namespace krait::proc {

// The pids of the processes under `proc_root`, ascending. Entries that are
// not process directories are skipped; an unreadable root gives none.
std::vector<pid_t> list_pids(const std::string& proc_root = "/proc");

// /proc/PID/comm without its newline: at most 15 bytes the process chose.
Result<std::string> read_comm(pid_t pid, const std::string& proc_root = "/proc");

// read_comm, or "?" for a process whose name cannot be read (gone, or
// not ours to read): for labels and summaries, which always name something.
std::string comm_or_unknown(pid_t pid);

}  // namespace krait::proc
