#include "text_table.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>

namespace switchboard::ctl {
namespace {

bool looksNumeric(const std::string& cell) {
  if (cell.empty() || std::count(cell.begin(), cell.end(), '.') > 1) return false;
  return std::all_of(cell.begin(), cell.end(), [](unsigned char c) {
    return std::isdigit(c) || c == '.' || c == '-' || c == '%';
  });
}

std::string upper(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

}  // namespace

TextTable::TextTable(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void TextTable::addRow(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  rows_.push_back(std::move(cells));
}

void TextTable::print(std::ostream& out) const {
  std::vector<std::size_t> width(headers_.size());
  std::vector<bool> numeric(headers_.size(), true);
  for (std::size_t c = 0; c < headers_.size(); ++c) {
    width[c] = headers_[c].size();
    bool any = false;
    for (const auto& row : rows_) {
      width[c] = std::max(width[c], row[c].size());
      if (row[c].empty() || row[c] == "-") continue;
      any = true;
      if (!looksNumeric(row[c])) numeric[c] = false;
    }
    if (!any) numeric[c] = false;
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (std::size_t c = 0; c < cells.size(); ++c) {
      std::string pad(width[c] - cells[c].size(), ' ');
      if (c > 0) text += "  ";
      bool last = c + 1 == cells.size();
      if (numeric[c]) {
        text += pad + cells[c];
      } else {
        text += cells[c];
        if (!last) text += pad;
      }
    }
    out << text << '\n';
  };
  std::vector<std::string> head;
  for (const auto& h : headers_) head.push_back(upper(h));
  line(head);
  for (const auto& row : rows_) line(row);
}

std::string formatTimeMs(long long epochMs) {
  if (epochMs <= 0) return "-";
  std::time_t seconds = static_cast<std::time_t>(epochMs / 1000);
  std::tm local{};
  localtime_r(&seconds, &local);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%d %H:%M:%S", &local);
  return buffer;
}

std::string formatDuration(unsigned long long seconds) {
  char buffer[48];
  if (seconds >= 86400) {
    std::snprintf(buffer, sizeof buffer, "%llud %lluh", seconds / 86400, seconds % 86400 / 3600);
  } else if (seconds >= 3600) {
    std::snprintf(buffer, sizeof buffer, "%lluh %llum", seconds / 3600, seconds % 3600 / 60);
  } else if (seconds >= 60) {
    std::snprintf(buffer, sizeof buffer, "%llum %llus", seconds / 60, seconds % 60);
  } else {
    std::snprintf(buffer, sizeof buffer, "%llus", seconds);
  }
  return buffer;
}

std::string formatNanos(unsigned long long nanos) {
  char buffer[32];
  if (nanos < 1000) {
    std::snprintf(buffer, sizeof buffer, "%lluns", nanos);
  } else if (nanos < 1000000) {
    std::snprintf(buffer, sizeof buffer, "%.1fus", static_cast<double>(nanos) / 1e3);
  } else if (nanos < 1000000000) {
    std::snprintf(buffer, sizeof buffer, "%.2fms", static_cast<double>(nanos) / 1e6);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.1fs", static_cast<double>(nanos) / 1e9);
  }
  return buffer;
}

}  // namespace switchboard::ctl
