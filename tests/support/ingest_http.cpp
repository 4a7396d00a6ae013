#include "support/ingest_http.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

#include "export/pprof.h"
#include "util/json_writer.h"

namespace krait::test::ingest {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string trim(std::string_view s) {
  const auto begin = s.find_first_not_of(" \t");
  if (begin == std::string_view::npos)
    return "";
  const auto end = s.find_last_not_of(" \t");
  return std::string(s.substr(begin, end - begin + 1));
}

const char* reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 411:
      return "Length Required";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

bool valid_label_name(std::string_view name) {
  if (name.empty())
    return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
      return false;
  }
  return true;
}

bool valid_metric_name(std::string_view name) {
  if (name.empty())
    return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
      return false;
  }
  return true;
}

// Decodes one UTF-8 sequence at a time; any malformed, overlong or
// surrogate sequence fails.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int extra = 0;
    uint32_t cp = 0;
    if (c <= 0x7f) {
      ++i;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) {
      extra = 1;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      extra = 2;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + static_cast<size_t>(extra) >= s.size())
      return false;
    for (int k = 1; k <= extra; ++k) {
      const auto d = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((d & 0xc0) != 0x80)
        return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if ((extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += static_cast<size_t>(extra) + 1;
  }
  return true;
}

bool is_uuid(std::string_view id) {
  if (id.size() != 36)
    return false;
  for (size_t i = 0; i < id.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (id[i] != '-')
        return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(id[i]))) {
      return false;
    }
  }
  return true;
}

std::string percent_decode(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%' && i + 2 < in.size() &&
               std::isxdigit(static_cast<unsigned char>(in[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
      unsigned value = 0;
      std::from_chars(in.data() + i + 1, in.data() + i + 3, value, 16);
      out += static_cast<char>(value);
      i += 2;
    } else {
      out += in[i];
    }
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z')
      return c - 'A';
    if (c >= 'a' && c <= 'z')
      return c - 'a' + 26;
    if (c >= '0' && c <= '9')
      return c - '0' + 52;
    if (c == '+')
      return 62;
    if (c == '/')
      return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=')
      break;
    const int v = value(c);
    if (v < 0)
      return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

std::string connect_error(std::string_view code, std::string_view message) {
  JsonWriter json;
  json.begin_object().key("code").value(code).key("message").value(message).end_object();
  return json.str();
}

// Pyroscope's legacy labelset syntax: app{key=value,key=value}.
Result<std::pair<std::string, std::map<std::string, std::string>>> parse_ingest_name(
    std::string_view name) {
  enum { kApp, kKey, kValue, kDone } state = kApp;
  std::string app, key, value;
  std::map<std::string, std::string> labels;
  const std::string text = std::string(name) + "{";
  for (char c : text) {
    switch (state) {
      case kApp:
        if (c == '{') {
          app = trim(app);
          if (app.empty())
            return make_error("name: service name is required");
          for (char a : app)
            if (!(std::isalnum(static_cast<unsigned char>(a)) || a == '_' || a == '.' || a == '-' ||
                  a == '/'))
              return make_error("name: invalid service name character '{}' in '{}'", a, app);
          state = kKey;
        } else {
          app += c;
        }
        break;
      case kKey:
        if (c == '}') {
          state = kDone;
        } else if (c == '=') {
          state = kValue;
          value.clear();
        } else {
          key += c;
        }
        break;
      case kValue:
        if (c == ',' || c == '}') {
          const std::string k = trim(key);
          if (k.empty())
            return make_error("name: label name is required");
          if (k != "__name__")
            for (char a : k)
              if (!(std::isalnum(static_cast<unsigned char>(a)) || a == '_' || a == '.'))
                return make_error("name: invalid label name character '{}' in '{}'", a, k);
          labels[k] = trim(value);
          key.clear();
          state = kKey;
        } else {
          value += c;
        }
        break;
      case kDone:
        break;
    }
  }
  return std::make_pair(app, labels);
}

std::optional<std::string> multipart_field(std::string_view content_type, std::string_view body,
                                           std::string_view field) {
  const std::string lowered = lower(content_type);
  const size_t at = lowered.find("boundary=");
  if (at == std::string::npos)
    return std::nullopt;
  std::string boundary(content_type.substr(at + 9));
  boundary = boundary.substr(0, boundary.find(';'));
  boundary = trim(boundary);
  if (boundary.size() >= 2 && boundary.front() == '"' && boundary.back() == '"')
    boundary = boundary.substr(1, boundary.size() - 2);
  const std::string delimiter = "--" + boundary;
  size_t pos = body.find(delimiter);
  while (pos != std::string_view::npos) {
    pos += delimiter.size();
    if (body.substr(pos, 2) == "--")
      return std::nullopt;
    if (body.substr(pos, 2) != "\r\n")
      return std::nullopt;
    pos += 2;
    const size_t headers_end = body.find("\r\n\r\n", pos);
    if (headers_end == std::string_view::npos)
      return std::nullopt;
    const std::string headers = lower(body.substr(pos, headers_end - pos));
    const size_t data_begin = headers_end + 4;
    const size_t data_end = body.find("\r\n" + delimiter, data_begin);
    if (data_end == std::string_view::npos)
      return std::nullopt;
    const std::string wanted = fmt::format("name=\"{}\"", field);
    if (headers.find("content-disposition: form-data") != std::string::npos &&
        headers.find(wanted) != std::string::npos)
      return std::string(body.substr(data_begin, data_end - data_begin));
    pos = data_end + 2;
  }
  return std::nullopt;
}

// Pyroscope parses what it stores: gzipped or plain pprof. Anything else
// (say, a whole multipart form sent as format=pprof) is refused.
std::optional<std::string> pprof_problem(std::string_view raw) {
  if (raw.empty())
    return "empty profile";
  if (raw.size() >= 2 && static_cast<uint8_t>(raw[0]) == 0x1f &&
      static_cast<uint8_t>(raw[1]) == 0x8b) {
    auto decoded = exporter::decode_pprof(raw);
    if (!decoded)
      return "not a pprof profile: " + decoded.error().message;
    return std::nullopt;
  }
  perftools::profiles::Profile profile;
  if (!profile.ParseFromString(std::string(raw)))
    return "not a pprof profile (neither gzip nor a profile.proto message)";
  return std::nullopt;
}

}  // namespace krait::test::ingest
