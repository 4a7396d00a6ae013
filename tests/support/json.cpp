#include "support/json.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace krait::test {
namespace {

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Result<JsonValue> parse_document() {
    JsonValue value;
    KRAIT_TRY(parse_value(value, 0));
    skip_space();
    if (pos_ != text_.size())
      return fail("unexpected text after the value");
    return value;
  }

 private:
  Error fail(std::string_view what) const {
    return make_error("JSON: {} at offset {}", what, pos_);
  }

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }

  bool consume_literal(std::string_view literal) {
    if (text_.substr(pos_, literal.size()) != literal)
      return false;
    pos_ += literal.size();
    return true;
  }

  Result<void> parse_value(JsonValue& out, int depth) {
    if (depth > kMaxJsonDepth)
      return fail("nesting too deep");
    skip_space();
    if (pos_ >= text_.size())
      return fail("unexpected end of input");
    char c = text_[pos_];
    switch (c) {
      case '{':
        return parse_object(out, depth);
      case '[':
        return parse_array(out, depth);
      case '"':
        out.type = JsonValue::Type::kString;
        return parse_string(out.string);
      case 't':
      case 'f':
        out.type = JsonValue::Type::kBool;
        out.boolean = c == 't';
        if (!consume_literal(c == 't' ? "true" : "false"))
          return fail("bad literal");
        return {};
      case 'n':
        out.type = JsonValue::Type::kNull;
        if (!consume_literal("null"))
          return fail("bad literal");
        return {};
      default:
        return parse_number(out);
    }
  }

  Result<void> parse_object(JsonValue& out, int depth) {
    out.type = JsonValue::Type::kObject;
    ++pos_;
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == '}') {
      ++pos_;
      return {};
    }
    while (true) {
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != '"')
        return fail("expected a member name");
      std::string key;
      KRAIT_TRY(parse_string(key));
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != ':')
        return fail("expected ':'");
      ++pos_;
      JsonValue value;
      KRAIT_TRY(parse_value(value, depth + 1));
      out.keys.push_back(std::move(key));
      out.items.push_back(std::move(value));
      skip_space();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == '}') {
        ++pos_;
        return {};
      }
      return fail("expected ',' or '}'");
    }
  }

  Result<void> parse_array(JsonValue& out, int depth) {
    out.type = JsonValue::Type::kArray;
    ++pos_;
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == ']') {
      ++pos_;
      return {};
    }
    while (true) {
      JsonValue value;
      KRAIT_TRY(parse_value(value, depth + 1));
      out.items.push_back(std::move(value));
      skip_space();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == ']') {
        ++pos_;
        return {};
      }
      return fail("expected ',' or ']'");
    }
  }

  Result<uint32_t> parse_hex4() {
    if (text_.size() - pos_ < 4)
      return fail("short \\u escape");
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      char c = text_[pos_++];
      value <<= 4;
      if (c >= '0' && c <= '9')
        value |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f')
        value |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        value |= static_cast<uint32_t>(c - 'A' + 10);
      else
        return fail("bad hex digit in \\u escape");
    }
    return value;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  Result<void> parse_string(std::string& out) {
    ++pos_;  // opening quote
    while (true) {
      if (pos_ >= text_.size())
        return fail("unterminated string");
      char c = text_[pos_++];
      if (c == '"')
        return {};
      if (static_cast<unsigned char>(c) < 0x20)
        return fail("control character in string");
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ >= text_.size())
        return fail("unterminated escape");
      char e = text_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out.push_back(e);
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          auto first = parse_hex4();
          if (!first)
            return first.error();
          uint32_t cp = *first;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (!consume_literal("\\u"))
              return fail("high surrogate without a low one");
            auto second = parse_hex4();
            if (!second)
              return second.error();
            if (*second < 0xDC00 || *second > 0xDFFF)
              return fail("high surrogate without a low one");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (*second - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return fail("lone low surrogate");
          }
          append_utf8(out, cp);
          break;
        }
        default:
          return fail("bad escape");
      }
    }
  }

  Result<void> parse_number(JsonValue& out) {
    size_t start = pos_;
    bool integral = true;
    if (pos_ < text_.size() && text_[pos_] == '-')
      ++pos_;
    auto digits = [&] {
      size_t from = pos_;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9')
        ++pos_;
      return pos_ - from;
    };
    size_t int_start = pos_;
    size_t int_digits = digits();
    if (int_digits == 0)
      return fail("expected a value");
    if (int_digits > 1 && text_[int_start] == '0')
      return fail("leading zero in number");
    if (pos_ < text_.size() && text_[pos_] == '.') {
      integral = false;
      ++pos_;
      if (digits() == 0)
        return fail("expected digits after '.'");
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      integral = false;
      ++pos_;
      if (pos_ < text_.size() && (text_[pos_] == '+' || text_[pos_] == '-'))
        ++pos_;
      if (digits() == 0)
        return fail("expected digits in exponent");
    }
    std::string literal(text_.substr(start, pos_ - start));
    errno = 0;
    if (integral) {
      long long value = std::strtoll(literal.c_str(), nullptr, 10);
      if (errno == 0) {
        out.type = JsonValue::Type::kInt;
        out.integer = value;
        out.number = static_cast<double>(value);
        return {};
      }
      errno = 0;
    }
    double value = std::strtod(literal.c_str(), nullptr);
    if (errno == ERANGE && std::isinf(value))
      return fail("number out of range");
    out.type = JsonValue::Type::kDouble;
    out.number = value;
    return {};
  }

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

const JsonValue* JsonValue::find(std::string_view key) const {
  if (type != Type::kObject)
    return nullptr;
  for (size_t i = keys.size(); i-- > 0;) {
    if (keys[i] == key)
      return &items[i];
  }
  return nullptr;
}

Result<JsonValue> parse_json(std::string_view text) {
  return Parser(text).parse_document();
}

std::string_view json_type_name(JsonValue::Type type) {
  switch (type) {
    case JsonValue::Type::kNull:
      return "null";
    case JsonValue::Type::kBool:
      return "bool";
    case JsonValue::Type::kInt:
      return "integer";
    case JsonValue::Type::kDouble:
      return "number";
    case JsonValue::Type::kString:
      return "string";
    case JsonValue::Type::kArray:
      return "array";
    case JsonValue::Type::kObject:
      return "object";
  }
  return "?";
}

Result<const JsonValue*> json_member(const JsonValue& object, std::string_view key) {
  if (!object.is_object())
    return make_error("expected an object holding \"{}\", found {}", key,
                      json_type_name(object.type));
  const JsonValue* member = object.find(key);
  if (member == nullptr)
    return make_error("member \"{}\" is missing", key);
  return member;
}

namespace {

Result<const JsonValue*> typed_member(const JsonValue& object, std::string_view key,
                                      JsonValue::Type type) {
  auto member = json_member(object, key);
  if (!member)
    return member.error();
  if ((*member)->type != type)
    return make_error("member \"{}\" is {}, expected {}", key, json_type_name((*member)->type),
                      json_type_name(type));
  return *member;
}

}  // namespace

Result<std::string> json_string(const JsonValue& object, std::string_view key) {
  auto member = typed_member(object, key, JsonValue::Type::kString);
  if (!member)
    return member.error();
  return (*member)->string;
}

Result<int64_t> json_int(const JsonValue& object, std::string_view key) {
  auto member = typed_member(object, key, JsonValue::Type::kInt);
  if (!member)
    return member.error();
  return (*member)->integer;
}

Result<bool> json_bool(const JsonValue& object, std::string_view key) {
  auto member = typed_member(object, key, JsonValue::Type::kBool);
  if (!member)
    return member.error();
  return (*member)->boolean;
}

Result<const JsonValue*> json_array(const JsonValue& object, std::string_view key) {
  return typed_member(object, key, JsonValue::Type::kArray);
}

Result<const JsonValue*> json_object(const JsonValue& object, std::string_view key) {
  return typed_member(object, key, JsonValue::Type::kObject);
}

}  // namespace krait::test
