// Statements over many rows at once. SQLite pays for a statement's set-up
// (the VM's start and halt, a cursor opened per table and index,
// AUTOINCREMENT's sqlite_sequence row read and written) once per statement,
// not once per row: writing a write's rows with one INSERT per chunk of rows,
// and deleting them with one DELETE ... IN per chunk, costs about a third less
// per row than a statement per row (docs/benchmarks.md, "The offline store").
// Chunks have a few fixed sizes (kRowChunks), so a statement cache holds a
// handful of texts per table. Use inside a write (Store::write's callback).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>

#include "store/store.h"

namespace switchboard::store {

// The rows of one statement, largest first: a run of rows is cut into as many
// chunks of the largest size as fit, then of the next, and so on.
inline constexpr std::array<std::size_t, 4> kRowChunks = {64, 16, 4, 1};

// Inserts rows [0, count) with `head` ("INSERT INTO t(a, b)", or INSERT OR
// IGNORE) and `columns` values per row: `bind(statement, firstIndex, row)`
// binds row `row`'s values at indexes firstIndex .. firstIndex + columns - 1.
// A row that fails fails its whole chunk's statement (StoreError; rows of
// earlier chunks stay written: run it in a savepoint, as writeEachAlone does).
//
// `inserted(row, rowid)`, when given, learns each row's rowid. Only for a
// plain INSERT into a table whose rowid is AUTOINCREMENT: each row then takes
// the next rowid after every rowid the table ever had, so one statement's
// rows have consecutive rowids ending at last_insert_rowid.
void insertRows(Connection& db, std::string_view head, int columns, std::size_t count,
                const std::function<void(Statement&, int firstIndex, std::size_t row)>& bind,
                const std::function<void(std::size_t row, std::int64_t rowid)>& inserted = {});

// Deletes the rows of `table` whose column `key` (its rowid or another
// indexed column) is one of `keys`; returns how many rows went.
std::int64_t deleteRows(Connection& db, std::string_view table, std::string_view key,
                        std::span<const std::int64_t> keys);

// Deletes the oldest rows of `table` by `rowid` (its rowid or an alias of it)
// up to the first whose `time` column is after `horizon`: for a table whose
// rows are written in about the order of their times. Visits the rows it
// deletes and one more, with no index on `time`. Returns how many went.
std::int64_t deleteOldestRows(Connection& db, std::string_view table, std::string_view rowid,
                              std::string_view time, std::int64_t horizon);

}  // namespace switchboard::store
