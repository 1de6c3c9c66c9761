// Named figures: what a worker hands the coordinator and what sbbench prints.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace switchboard::bench {

// An ordered list of key = value figures. Values are numbers or single tokens (no spaces),
// so a worker sends its whole result as one "key=value key=value" line, and the
// coordinator prints the final one as JSON. Keys are kept in insertion order.
class ReportFields {
 public:
  void set(const std::string& key, const std::string& value) {
    for (auto& [k, v] : items_) {
      if (k == key) {
        v = value;
        return;
      }
    }
    items_.emplace_back(key, value);
  }
  void set(const std::string& key, double value) {
    char text[64];
    std::snprintf(text, sizeof(text), "%.6g", value);
    set(key, std::string(text));
  }
  void set(const std::string& key, std::uint64_t value) { set(key, std::to_string(value)); }
  void set(const std::string& key, std::int64_t value) { set(key, std::to_string(value)); }
  void set(const std::string& key, int value) { set(key, std::to_string(value)); }
  void set(const std::string& key, std::uint32_t value) { set(key, std::to_string(value)); }

  bool has(const std::string& key) const {
    for (const auto& item : items_)
      if (item.first == key) return true;
    return false;
  }
  std::string text(const std::string& key) const {
    for (const auto& item : items_)
      if (item.first == key) return item.second;
    return {};
  }
  double number(const std::string& key) const {
    std::string value = text(key);
    if (value.empty()) return 0;
    try {
      return std::stod(value);
    } catch (...) {
      return 0;
    }
  }
  const std::vector<std::pair<std::string, std::string>>& items() const { return items_; }

  std::string toLine() const {
    std::string out;
    for (const auto& [k, v] : items_) {
      if (!out.empty()) out += ' ';
      out += k + '=' + v;
    }
    return out;
  }
  static ReportFields fromLine(const std::string& line) {
    ReportFields fields;
    std::istringstream in(line);
    std::string token;
    while (in >> token) {
      auto eq = token.find('=');
      if (eq != std::string::npos)
        fields.items_.emplace_back(token.substr(0, eq), token.substr(eq + 1));
    }
    return fields;
  }

  // One JSON object; values that parse fully as numbers are written as numbers.
  std::string toJson() const {
    std::string out = "{";
    bool first = true;
    for (const auto& [k, v] : items_) {
      if (!first) out += ", ";
      first = false;
      out += '"' + escape(k) + "\": ";
      out += isNumber(v) ? v : '"' + escape(v) + '"';
    }
    return out + "}";
  }

 private:
  static bool isNumber(const std::string& v) {
    if (v.empty()) return false;
    char* end = nullptr;
    std::strtod(v.c_str(), &end);
    return end != nullptr && *end == '\0' && v != "nan" && v != "inf" && v != "-inf";
  }
  static std::string escape(const std::string& s) {
    std::string out;
    for (char c : s) {
      if (c == '"' || c == '\\') out += '\\';
      if (static_cast<unsigned char>(c) < 0x20) continue;
      out += c;
    }
    return out;
  }
  std::vector<std::pair<std::string, std::string>> items_;
};

}  // namespace switchboard::bench
