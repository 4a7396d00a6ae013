// A program that embeds CPython, for the runtime tests: it is not python,
// links libpython, and runs tests/workloads/embedded_lane.py in two native
// threads through PyRun_SimpleString, the way application servers and
// plugins host Python.
//
//   embed_host /path/to/embedded_lane.py   (PYTHONHOME must point at the build)
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdio>
#include <string>
#include <thread>

namespace {

std::string python_string_literal(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\\' || c == '\'')
      out += '\\';
    out += c;
  }
  return out + "'";
}

void run_lane(const std::string& script, int lane) {
  PyGILState_STATE gil = PyGILState_Ensure();
  // Each lane gets its own globals: both run the same file at once.
  const std::string path = python_string_literal(script);
  const std::string code =
      "exec(compile(open(" + path + ").read(), " + path +
      ", 'exec'), {'__name__': 'krait_lane', 'KRAIT_LANE': " + std::to_string(lane) + "})\n";
  if (PyRun_SimpleString(code.c_str()) != 0)
    std::fprintf(stderr, "lane %d failed\n", lane);
  PyGILState_Release(gil);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s EMBEDDED_LANE_SCRIPT\n", argv[0]);
    return 2;
  }
  const std::string script = argv[1];
  Py_InitializeEx(0);
  PyThreadState* main_state = PyEval_SaveThread();
  std::thread a(run_lane, script, 0);
  std::thread b(run_lane, script, 1);
  a.join();
  b.join();
  PyEval_RestoreThread(main_state);
  return Py_FinalizeEx() < 0 ? 1 : 0;
}
