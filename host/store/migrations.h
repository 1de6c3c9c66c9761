// The store's schema history and the code that brings a database up to date.
#pragma once

#include <filesystem>
#include <span>
#include <string_view>

struct sqlite3;

namespace switchboard::store {

// One step of the schema. Step N takes a database from user_version N-1 to N.
struct Migration {
  int version;
  std::string_view description;
  std::string_view sql;  // one or more statements
};

// Every migration the server knows, in order (see migrations.cpp for the rule).
std::span<const Migration> storeMigrations();
int latestSchemaVersion();

// PRAGMA user_version of `db`.
int readSchemaVersion(sqlite3* db);

struct MigrationOutcome {
  int fromVersion;
  int toVersion;
};

// Applies the steps of `migrations` newer than the database's user_version,
// each in its own IMMEDIATE transaction that also sets user_version, so a
// failed step leaves the database at the previous version. `migrations` must
// be numbered 1..N in order. An up-to-date database is left untouched. Throws
// StoreError if a step fails or if the database is newer than N (written by a
// newer binary: opening it could corrupt data we do not understand).
MigrationOutcome applyMigrations(sqlite3* db, const std::filesystem::path& file,
                                 std::span<const Migration> migrations);

}  // namespace switchboard::store
