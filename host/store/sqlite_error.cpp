#include "store/sqlite_error.h"

#include <sqlite3.h>

#include <cctype>

#include "store/store.h"

namespace switchboard::store {

namespace {
constexpr std::size_t kMaxSqlInMessage = 160;
}

std::string sqlForMessage(std::string_view sql) {
  std::string line;
  line.reserve(std::min(sql.size(), kMaxSqlInMessage + 3));
  bool inSpace = true;  // also trims leading whitespace
  for (char c : sql) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!inSpace) line.push_back(' ');
      inSpace = true;
      continue;
    }
    inSpace = false;
    line.push_back(c);
    if (line.size() >= kMaxSqlInMessage) {
      line += "...";
      return line;
    }
  }
  while (!line.empty() && line.back() == ' ') line.pop_back();
  return line;
}

void throwSqlError(std::string_view message, std::string_view sql) {
  throw StoreError(std::string(message) + " (in: " + sqlForMessage(sql) + ")");
}

void throwSqlError(sqlite3* db, std::string_view sql) {
  throwSqlError(sqlite3_errmsg(db), sql);
}

}  // namespace switchboard::store
