// How SQLite failures become StoreError: one line with SQLite's message and
// the statement that failed.
#pragma once

#include <string>
#include <string_view>

struct sqlite3;

namespace switchboard::store {

// The SQL on one line (whitespace runs collapsed) and cut to a readable length,
// for error messages and logs.
std::string sqlForMessage(std::string_view sql);

// Throws StoreError "<message> (in: <sql>)"; `message` is usually sqlite3_errmsg.
[[noreturn]] void throwSqlError(std::string_view message, std::string_view sql);

// Throws StoreError with the connection's current sqlite3_errmsg.
[[noreturn]] void throwSqlError(sqlite3* db, std::string_view sql);

}  // namespace switchboard::store
