#include "admin/prometheus_text.h"

#include <cmath>
#include <cstdio>

namespace switchboard::admin {

std::string PrometheusText::escapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string PrometheusText::escapeHelp(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string PrometheusText::formatDouble(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.9g", value);
  return buffer;
}

void PrometheusText::family(std::string_view name, std::string_view type, std::string_view help) {
  if (!families_.emplace(name).second) return;
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  out_ += escapeHelp(help);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void PrometheusText::writeName(std::string_view name, std::initializer_list<Label> labels) {
  out_ += name;
  if (labels.size() == 0) return;
  out_ += '{';
  bool first = true;
  for (const auto& [key, value] : labels) {
    if (!first) out_ += ',';
    first = false;
    out_ += key;
    out_ += "=\"";
    out_ += escapeLabelValue(value);
    out_ += '"';
  }
  out_ += '}';
}

void PrometheusText::sample(std::string_view name, std::initializer_list<Label> labels,
                            double value) {
  writeName(name, labels);
  out_ += ' ';
  out_ += formatDouble(value);
  out_ += '\n';
}

void PrometheusText::sample(std::string_view name, std::initializer_list<Label> labels,
                            std::uint64_t value) {
  writeName(name, labels);
  out_ += ' ';
  out_ += std::to_string(value);
  out_ += '\n';
}

}  // namespace switchboard::admin
