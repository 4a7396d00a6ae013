// The test matrix: every CPython interpreter on this machine, as
// scripts/provision-pythons describes it in interpreters.json:
//
//   {"interpreters": [{"name": "pyenv-3.11.7", "version": "3.11.7",
//     "executable": "/root/.pyenv/versions/3.11.7/bin/python3.11",
//     "env": {}, "build": "shared", "stripped": false, "origin": "pyenv"}, ...]}
//
// `executable` is the real ELF file (never a shim); `env` must be added to the
// environment of every process started with it (PYTHONHOME for the unpacked
// Debian sid builds). `build` is "shared" (libpython3.x.so) or "static";
// `origin` is "pyenv", "debian-<codename>" or "debian-sid".
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "util/result.h"

namespace krait::test {

struct Interpreter {
  std::string name;
  std::string version;  // "3.11.7", as the interpreter reports it
  std::string executable;
  std::map<std::string, std::string> env;
  std::string build;  // "shared" or "static"
  bool stripped = false;
  std::string origin;

  // Major and minor version, e.g. {3, 11}; {0, 0} if `version` is malformed.
  std::pair<int, int> major_minor() const;
  // True from 3.11 on, where frames carry co_qualname.
  bool has_qualname() const;
};

// $KRAIT_PYTHON_CACHE/interpreters.json, else
// /var/cache/krait/pythons/interpreters.json.
std::string manifest_path();

// Reads and validates a manifest file.
Result<std::vector<Interpreter>> read_manifest(const std::string& path);

// read_manifest(manifest_path()), for tests. On any error it records a gtest
// failure (ADD_FAILURE) saying what is wrong and how to provision, and returns
// an empty list, so a test that needs interpreters fails instead of passing
// vacuously.
std::vector<Interpreter> load_manifest();

// The interpreters the manifest lists, by name, for parameterized tests. A
// missing manifest yields one name ("manifest_missing") whose test fails,
// never zero tests.
std::vector<std::string> interpreter_names();

// The gtest name of a test parameterized by interpreter name
// ("pyenv-3.12.1" -> "pyenv_3_12_1").
std::string interpreter_test_name(const ::testing::TestParamInfo<std::string>& info);

}  // namespace krait::test
