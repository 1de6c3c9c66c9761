#pragma once
// The host's SQLite file opened from a test, beside the running host (WAL mode
// lets both read; a write waits up to 10 s for the host's writer): to look at
// what the host stored, and to age rows as time passing would.

#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <variant>
#include <vector>

namespace switchboard::integration {

// One connection to <dataDir>/switchboard.db. Every call throws
// std::runtime_error with SQLite's message on failure. Not thread-safe.
class DatabaseFile {
 public:
  explicit DatabaseFile(const std::filesystem::path& dataDir);
  ~DatabaseFile();
  DatabaseFile(const DatabaseFile&) = delete;
  DatabaseFile& operator=(const DatabaseFile&) = delete;

  static std::filesystem::path pathIn(const std::filesystem::path& dataDir);

  // Runs `sql` with `params` bound (as integers or text, in order) and returns
  // the first column of every row as text (NULL as ""); blobs come back raw.
  using Param = std::variant<std::int64_t, std::string>;
  std::vector<std::string> column(const std::string& sql, const std::vector<Param>& params = {});
  // The first column of the first row as an integer (throws when there is no row).
  std::int64_t integer(const std::string& sql, const std::vector<Param>& params = {});
  // Runs a statement that returns no rows; returns sqlite3_changes().
  int execute(const std::string& sql, const std::vector<Param>& params = {});

 private:
  sqlite3* db_ = nullptr;
};

// COUNT(*) of `table` in the host's database under `dataDir`.
std::int64_t countRows(const std::filesystem::path& dataDir, const std::string& table);

}  // namespace switchboard::integration
