// What a stopped Switchboard host left on disk: its SQLite files, measured after a checkpoint.
#pragma once

#include <filesystem>

#include "report_fields.h"

namespace switchboard::bench {

// Measures every SQLite database in `dataDir` (files that start with the SQLite header) of a
// host that has stopped: the main file and its -wal before and after a
// `PRAGMA wal_checkpoint(TRUNCATE)`, the pages on the free list, and the rows of each table.
// Figures (summed over the databases; there is normally one, switchboard.db):
//   db_files, db_wal_bytes_at_stop, db_file_bytes, db_wal_bytes, db_total_bytes (file + WAL
//   after the checkpoint), db_free_bytes (free-list pages: space SQLite reuses before it
//   grows the file), rows_<table> for each table.
// Throws std::runtime_error when a database cannot be opened or checkpointed.
ReportFields measureDatabases(const std::filesystem::path& dataDir);

}  // namespace switchboard::bench
