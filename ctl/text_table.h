// Column-aligned plain-text tables: the human output of sbctl.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace switchboard::ctl {

// A table of strings printed with each column as wide as its widest cell, two spaces
// between columns, a header row in capitals. Numbers are right-aligned (a column is
// numeric when every non-empty cell of it parses as a number). Owns its cells; not
// thread-safe.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> headers);
  void addRow(std::vector<std::string> cells);
  bool empty() const { return rows_.empty(); }
  void print(std::ostream& out) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// "2024-05-01 12:00:03" in local time; "-" for 0.
std::string formatTimeMs(long long epochMs);
// "3d 4h", "2h 5m", "12m 3s", "45s".
std::string formatDuration(unsigned long long seconds);
// Nanoseconds or microseconds as "812ns", "3.4us", "1.20ms", "2.5s".
std::string formatNanos(unsigned long long nanos);

}  // namespace switchboard::ctl
