#include "database_file.h"

#include <stdexcept>
#include <variant>

namespace switchboard::integration {

namespace {

// A prepared statement with its parameters bound; finalized by the destructor.
class Prepared {
 public:
  Prepared(sqlite3* db, const std::string& sql, const std::vector<DatabaseFile::Param>& params)
      : db_(db) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &statement_, nullptr) != SQLITE_OK) {
      throw std::runtime_error("cannot prepare \"" + sql + "\": " + sqlite3_errmsg(db));
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      int index = static_cast<int>(i) + 1;
      if (const auto* number = std::get_if<std::int64_t>(&params[i])) {
        sqlite3_bind_int64(statement_, index, *number);
      } else {
        const auto& text = std::get<std::string>(params[i]);
        sqlite3_bind_text(statement_, index, text.data(), static_cast<int>(text.size()),
                          SQLITE_TRANSIENT);
      }
    }
  }
  ~Prepared() { sqlite3_finalize(statement_); }
  Prepared(const Prepared&) = delete;
  Prepared& operator=(const Prepared&) = delete;

  // True with a row, false when done; throws on an error.
  bool step() {
    int rc = sqlite3_step(statement_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw std::runtime_error(std::string("sqlite: ") + sqlite3_errmsg(db_));
  }
  sqlite3_stmt* get() { return statement_; }

 private:
  sqlite3* db_;
  sqlite3_stmt* statement_ = nullptr;
};

}  // namespace

std::filesystem::path DatabaseFile::pathIn(const std::filesystem::path& dataDir) {
  return dataDir / "switchboard.db";
}

DatabaseFile::DatabaseFile(const std::filesystem::path& dataDir) {
  auto path = pathIn(dataDir);
  if (!std::filesystem::exists(path)) throw std::runtime_error("no database at " + path.string());
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    std::string reason = sqlite3_errmsg(db_);
    sqlite3_close(db_);
    throw std::runtime_error("cannot open " + path.string() + ": " + reason);
  }
  sqlite3_busy_timeout(db_, 10000);
}

DatabaseFile::~DatabaseFile() {
  sqlite3_close(db_);
}

std::vector<std::string> DatabaseFile::column(const std::string& sql,
                                              const std::vector<Param>& params) {
  Prepared statement(db_, sql, params);
  std::vector<std::string> values;
  while (statement.step()) {
    const void* bytes = sqlite3_column_blob(statement.get(), 0);
    int size = sqlite3_column_bytes(statement.get(), 0);
    values.emplace_back(bytes ? static_cast<const char*>(bytes) : "", bytes ? size : 0);
  }
  return values;
}

std::int64_t DatabaseFile::integer(const std::string& sql, const std::vector<Param>& params) {
  Prepared statement(db_, sql, params);
  if (!statement.step()) throw std::runtime_error("no row from \"" + sql + "\"");
  return sqlite3_column_int64(statement.get(), 0);
}

int DatabaseFile::execute(const std::string& sql, const std::vector<Param>& params) {
  Prepared statement(db_, sql, params);
  while (statement.step()) {
  }
  return sqlite3_changes(db_);
}

std::int64_t countRows(const std::filesystem::path& dataDir, const std::string& table) {
  return DatabaseFile(dataDir).integer("SELECT COUNT(*) FROM " + table);
}

}  // namespace switchboard::integration
