#include "support/manifest.h"

#include <cctype>

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "support/json.h"

namespace krait::test {
namespace {

constexpr const char* kDefaultCache = "/var/cache/krait/pythons";

Result<Interpreter> parse_interpreter(const JsonValue& entry) {
  Interpreter out;
  auto name = json_string(entry, "name");
  if (!name)
    return name.error();
  out.name = *name;
  auto with_name = [&](const Error& e) {
    return make_error("interpreter \"{}\": {}", out.name, e.message);
  };
  auto version = json_string(entry, "version");
  if (!version)
    return with_name(version.error());
  out.version = *version;
  auto executable = json_string(entry, "executable");
  if (!executable)
    return with_name(executable.error());
  out.executable = *executable;
  auto build = json_string(entry, "build");
  if (!build)
    return with_name(build.error());
  out.build = *build;
  if (out.build != "shared" && out.build != "static")
    return with_name(make_error("build is \"{}\", expected shared or static", out.build));
  auto stripped = json_bool(entry, "stripped");
  if (!stripped)
    return with_name(stripped.error());
  out.stripped = *stripped;
  auto origin = json_string(entry, "origin");
  if (!origin)
    return with_name(origin.error());
  out.origin = *origin;
  auto env = json_object(entry, "env");
  if (!env)
    return with_name(env.error());
  for (size_t i = 0; i < (*env)->keys.size(); ++i) {
    const JsonValue& value = (*env)->items[i];
    if (!value.is_string())
      return with_name(make_error("env \"{}\" is not a string", (*env)->keys[i]));
    out.env[(*env)->keys[i]] = value.string;
  }
  if (out.major_minor().first == 0)
    return with_name(make_error("version \"{}\" is not major.minor[.patch]", out.version));
  return out;
}

}  // namespace

std::pair<int, int> Interpreter::major_minor() const {
  int major = 0;
  int minor = 0;
  char dot = 0;
  std::istringstream in(version);
  if (!(in >> major >> dot >> minor) || dot != '.')
    return {0, 0};
  return {major, minor};
}

bool Interpreter::has_qualname() const {
  return major_minor() >= std::pair{3, 11};
}

std::string manifest_path() {
  const char* cache = std::getenv("KRAIT_PYTHON_CACHE");
  std::string dir = (cache != nullptr && *cache != '\0') ? cache : kDefaultCache;
  return dir + "/interpreters.json";
}

Result<std::vector<Interpreter>> read_manifest(const std::string& path) {
  std::ifstream file(path);
  if (!file)
    return make_error("cannot open {}", path);
  std::stringstream text;
  text << file.rdbuf();
  auto root = parse_json(text.str());
  if (!root)
    return make_error("{}: {}", path, root.error().message);
  auto list = json_array(*root, "interpreters");
  if (!list)
    return make_error("{}: {}", path, list.error().message);
  std::vector<Interpreter> out;
  for (const JsonValue& entry : (*list)->items) {
    auto interpreter = parse_interpreter(entry);
    if (!interpreter)
      return make_error("{}: {}", path, interpreter.error().message);
    if (::access(interpreter->executable.c_str(), X_OK) != 0)
      return make_error("{}: interpreter \"{}\": {} is missing or not executable", path,
                        interpreter->name, interpreter->executable);
    out.push_back(std::move(*interpreter));
  }
  if (out.empty())
    return make_error("{}: lists no interpreters", path);
  return out;
}

std::vector<Interpreter> load_manifest() {
  std::string path = manifest_path();
  auto manifest = read_manifest(path);
  if (!manifest) {
    ADD_FAILURE() << "no usable interpreter manifest: " << manifest.error().message
                  << "\n(run scripts/provision-pythons as root; set KRAIT_PYTHON_CACHE if it "
                     "was provisioned somewhere other than /var/cache/krait/pythons)";
    return {};
  }
  return std::move(*manifest);
}

std::vector<std::string> interpreter_names() {
  auto m = read_manifest(manifest_path());
  if (!m || m->empty())
    return {"manifest_missing"};
  std::vector<std::string> names;
  for (const auto& i : *m)
    names.push_back(i.name);
  return names;
}

std::string interpreter_test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string n = info.param;
  for (char& c : n)
    if (!std::isalnum(static_cast<unsigned char>(c)))
      c = '_';
  return n;
}

}  // namespace krait::test
