#include "database_files.h"

#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace switchboard::bench {

namespace fs = std::filesystem;

namespace {

bool isSqliteFile(const fs::path& path) {
  static const char kHeader[16] = "SQLite format 3";  // and the terminating NUL
  char head[16] = {};
  std::ifstream in(path, std::ios::binary);
  return in.read(head, sizeof(head)) && std::memcmp(head, kHeader, sizeof(head)) == 0;
}

std::uint64_t sizeOrZero(const fs::path& path) {
  std::error_code error;
  auto size = fs::file_size(path, error);
  return error ? 0 : static_cast<std::uint64_t>(size);
}

// One open database; closes it on every path out.
class Database {
 public:
  explicit Database(const fs::path& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      std::string why = db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      throw std::runtime_error("cannot open " + path.string() + ": " + why);
    }
    sqlite3_busy_timeout(db_, 10000);
  }
  ~Database() { sqlite3_close(db_); }
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Runs `sql` and returns the first column of every row as text.
  std::vector<std::string> column(const std::string& sql) {
    sqlite3_stmt* statement = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &statement, nullptr) != SQLITE_OK) {
      throw std::runtime_error(sql + ": " + sqlite3_errmsg(db_));
    }
    std::vector<std::string> values;
    int rc;
    while ((rc = sqlite3_step(statement)) == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(statement, 0);
      values.emplace_back(text != nullptr ? reinterpret_cast<const char*>(text) : "");
    }
    sqlite3_finalize(statement);
    if (rc != SQLITE_DONE) throw std::runtime_error(sql + ": " + sqlite3_errmsg(db_));
    return values;
  }
  std::uint64_t number(const std::string& sql) {
    auto values = column(sql);
    return values.empty() ? 0 : std::stoull(values.front());
  }

 private:
  sqlite3* db_ = nullptr;
};

}  // namespace

ReportFields measureDatabases(const fs::path& dataDir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dataDir)) {
    if (entry.is_regular_file() && isSqliteFile(entry.path())) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::uint64_t walAtStop = 0, fileBytes = 0, walBytes = 0, freeBytes = 0;
  std::map<std::string, std::uint64_t> rows;
  for (const fs::path& file : files) {
    fs::path wal = file.string() + "-wal";
    walAtStop += sizeOrZero(wal);
    Database db(file);
    db.column("PRAGMA wal_checkpoint(TRUNCATE)");
    freeBytes += db.number("PRAGMA freelist_count") * db.number("PRAGMA page_size");
    for (const std::string& table :
         db.column("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                   "'sqlite_%' ORDER BY name")) {
      std::string quoted = "\"";
      for (char c : table) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
      rows[table] += db.number("SELECT count(*) FROM " + quoted + "\"");
    }
    fileBytes += sizeOrZero(file);
    walBytes += sizeOrZero(wal);
  }
  ReportFields r;
  r.set("db_files", static_cast<std::uint64_t>(files.size()));
  r.set("db_wal_bytes_at_stop", walAtStop);
  r.set("db_file_bytes", fileBytes);
  r.set("db_wal_bytes", walBytes);
  r.set("db_total_bytes", fileBytes + walBytes);
  r.set("db_free_bytes", freeBytes);
  for (const auto& [table, count] : rows) {
    std::string key = "rows_";
    for (char c : table) key += (std::isalnum(static_cast<unsigned char>(c)) || c == '_') ? c : '_';
    r.set(key, count);
  }
  return r;
}

}  // namespace switchboard::bench
