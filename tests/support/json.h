// A small JSON reader for the test oracles (workload truth, the interpreter
// manifest). Reads RFC 8259 text into a tree of JsonValue; it does not write
// JSON. Integers that fit in int64 stay exact (thread idents and pids must not
// pass through a double); other numbers become doubles. Strings are UTF-8,
// with \u escapes (surrogate pairs included) decoded. Nesting deeper than
// kMaxJsonDepth is an error rather than a stack overflow.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace krait::test {

inline constexpr int kMaxJsonDepth = 128;

struct JsonValue {
  enum class Type { kNull, kBool, kInt, kDouble, kString, kArray, kObject };

  Type type = Type::kNull;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0;  // also set for kInt
  std::string string;
  // Array elements, or object member values in source order.
  std::vector<JsonValue> items;
  // Object member names, parallel to `items`; empty for arrays.
  std::vector<std::string> keys;

  bool is_null() const { return type == Type::kNull; }
  bool is_object() const { return type == Type::kObject; }
  bool is_array() const { return type == Type::kArray; }
  bool is_string() const { return type == Type::kString; }
  bool is_int() const { return type == Type::kInt; }
  bool is_bool() const { return type == Type::kBool; }
  bool is_number() const { return type == Type::kInt || type == Type::kDouble; }

  // The member named `key` of an object (the last one if repeated), or null.
  const JsonValue* find(std::string_view key) const;
};

// Parses exactly one JSON value; trailing non-space text is an error.
Result<JsonValue> parse_json(std::string_view text);

// Typed member access with errors that name the member and what was found.
Result<const JsonValue*> json_member(const JsonValue& object, std::string_view key);
Result<std::string> json_string(const JsonValue& object, std::string_view key);
Result<int64_t> json_int(const JsonValue& object, std::string_view key);
Result<bool> json_bool(const JsonValue& object, std::string_view key);
Result<const JsonValue*> json_array(const JsonValue& object, std::string_view key);
Result<const JsonValue*> json_object(const JsonValue& object, std::string_view key);

// "object", "string", ... for messages.
std::string_view json_type_name(JsonValue::Type type);

}  // namespace krait::test
