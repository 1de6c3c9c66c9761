// Writing the Prometheus text exposition format (version 0.0.4).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <set>
#include <string>
#include <string_view>
#include <utility>

namespace switchboard::admin {

using Label = std::pair<std::string_view, std::string_view>;

// Accumulates metric families: family() writes the HELP and TYPE lines once
// per name, sample() writes `name{labels} value`. Label values are escaped
// (backslash, double quote, newline) and HELP text too (backslash, newline),
// as the format requires. A plain value, used on one thread.
class PrometheusText {
 public:
  // type: "counter", "gauge", "histogram" or "summary".
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, std::initializer_list<Label> labels, double value);
  void sample(std::string_view name, std::initializer_list<Label> labels, std::uint64_t value);
  void sample(std::string_view name, std::uint64_t value) { sample(name, {}, value); }

  const std::string& text() const { return out_; }

  static std::string escapeLabelValue(std::string_view value);
  static std::string escapeHelp(std::string_view help);
  static std::string formatDouble(double value);

 private:
  void writeName(std::string_view name, std::initializer_list<Label> labels);

  std::string out_;
  std::set<std::string, std::less<>> families_;
};

}  // namespace switchboard::admin
