#include "store/migrations.h"

#include <sqlite3.h>

#include <array>
#include <optional>
#include <string>

#include "store/store.h"

namespace switchboard::store {

namespace {

// ----------------------------------------------------------------- the schema
//
// APPEND ONLY. A released migration is never edited, reordered or removed:
// databases in the field already ran it and record only its number. To change
// the schema, add a new entry at the end with the next version number.
constexpr std::array kMigrations = {
    Migration{1, "initial schema", R"sql(
CREATE TABLE users(
  phone TEXT PRIMARY KEY,
  created_ms INTEGER NOT NULL,
  last_seen_ms INTEGER
);

-- One active device per phone: a newly verified device replaces the row.
CREATE TABLE devices(
  phone TEXT PRIMARY KEY REFERENCES users(phone) ON DELETE CASCADE,
  key_hash BLOB NOT NULL,
  device_name TEXT NOT NULL,
  created_ms INTEGER NOT NULL
);

CREATE TABLE contacts(
  owner TEXT NOT NULL,
  contact TEXT NOT NULL,
  added_ms INTEGER NOT NULL,
  PRIMARY KEY(owner, contact)
);

CREATE TABLE groups(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  owner TEXT NOT NULL,
  created_ms INTEGER NOT NULL
);

CREATE TABLE group_members(
  group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
  member TEXT NOT NULL,
  PRIMARY KEY(group_id, member)
);

-- The durable offline queue, ordered per recipient by server_id.
CREATE TABLE messages(
  server_id INTEGER PRIMARY KEY AUTOINCREMENT,
  sender TEXT NOT NULL,
  recipient TEXT NOT NULL,
  group_id INTEGER,
  client_msg_id TEXT NOT NULL,
  body BLOB NOT NULL,
  sent_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL
);
CREATE INDEX messages_by_recipient ON messages(recipient, server_id);

CREATE TABLE receipts_queue(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  recipient TEXT NOT NULL,
  server_id INTEGER NOT NULL,
  reader TEXT NOT NULL,
  kind INTEGER NOT NULL,
  at_ms INTEGER NOT NULL
);
CREATE INDEX receipts_queue_by_recipient ON receipts_queue(recipient, id);

CREATE TABLE dedup(
  sender TEXT NOT NULL,
  client_msg_id TEXT NOT NULL,
  server_id INTEGER NOT NULL,
  sent_ms INTEGER NOT NULL,
  PRIMARY KEY(sender, client_msg_id)
);

CREATE TABLE plugin_ledger(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at_ms INTEGER NOT NULL,
  actor TEXT NOT NULL,
  kind TEXT NOT NULL,
  from_version TEXT,
  to_version TEXT,
  sha256 TEXT,
  pause_us INTEGER,
  result TEXT NOT NULL,
  reason TEXT
);
)sql"},
    Migration{2, "delivery state and group origin of messages", R"sql(
-- delivered_ms: set when the recipient's Inbox.deliver returned (the body is
-- then cleared); rows stay until expiry so that receipts can find the sender.
-- origin_id: for the 2nd..nth recipient row of a group send, the id the
-- sender was given (NULL means the row's own server_id).
ALTER TABLE messages ADD COLUMN delivered_ms INTEGER;
ALTER TABLE messages ADD COLUMN origin_id INTEGER;
CREATE INDEX messages_undelivered ON messages(recipient, server_id) WHERE delivered_ms IS NULL;
CREATE INDEX messages_expiry ON messages(expires_ms);
)sql"},
    Migration{3, "the store holds what waits, not history", R"sql(
-- Messages to online phones are delivered from memory; only what waits is
-- stored, and a row is deleted once its phone has it.
--
-- users.number: a user's number, carried in the high bits of every message id
-- the user sends, so a receipt finds its sender without any stored row
-- (1 is the operator's "system" sender; users count from 2).
-- users.queued: how many rows wait for the user (kept by every insert and
-- delete, so no statement counts a backlog).
ALTER TABLE users ADD COLUMN number INTEGER;
ALTER TABLE users ADD COLUMN queued INTEGER NOT NULL DEFAULT 0;
UPDATE users SET number = rowid + 1;
CREATE UNIQUE INDEX users_by_number ON users(number);

-- The offline queue. seq: the commit order, in which a phone pages its rows.
-- id: the message id the phone sees (the same for every recipient of a group
-- send). holder: the session that holds the row's message in memory and will
-- deliver it (rows it wrote only to make them durable); NULL for the rest.
CREATE TABLE queue(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  recipient TEXT NOT NULL,
  id INTEGER NOT NULL,
  sender TEXT NOT NULL,
  group_id INTEGER NOT NULL,
  client_msg_id TEXT NOT NULL,
  body BLOB NOT NULL,
  sent_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  holder INTEGER
);
CREATE INDEX queue_by_recipient ON queue(recipient, seq);
CREATE INDEX queue_by_expiry ON queue(expires_ms);
-- Rows still waiting move over with their old ids (ids made before this
-- version carry no sender number: receipts for them are refused as unknown).
INSERT INTO queue(recipient, id, sender, group_id, client_msg_id, body, sent_ms, expires_ms)
  SELECT recipient, COALESCE(origin_id, server_id), sender, COALESCE(group_id, 0),
         client_msg_id, body, sent_ms, expires_ms
  FROM messages WHERE delivered_ms IS NULL ORDER BY server_id;
UPDATE users SET queued = (SELECT count(*) FROM queue WHERE queue.recipient = users.phone);
DROP TABLE messages;

ALTER TABLE receipts_queue ADD COLUMN holder INTEGER;
CREATE INDEX receipts_queue_by_time ON receipts_queue(at_ms);
-- Dedup rows are written only for stored messages and expire with them.
CREATE INDEX dedup_by_time ON dedup(sent_ms);

-- Message ids are handed out from memory in blocks; `next_sequence` is the
-- first sequence number no running server may have used.
CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters VALUES('next_sequence', 1);
)sql"},
    Migration{4, "dedup rows and waiting receipts expire in write order", R"sql(
-- The sweep deletes dedup rows and waiting receipts in the order they were
-- written (by rowid), up to the first one younger than the TTL, so neither
-- table needs an index by time: every row written is one B-tree insert (and
-- every receipt deleted one B-tree delete) less. A row whose time is out of
-- order (a receipt held in memory before it was written) goes with the rows
-- around it, at most one TTL late.
DROP INDEX dedup_by_time;
DROP INDEX receipts_queue_by_time;
)sql"},
    Migration{5, "contacts are found by whom they name", R"sql(
-- Presence fans out to the phones that have a phone as a contact (WHERE
-- contact = ?): without this index every such read scanned the whole table.
CREATE INDEX contacts_by_contact ON contacts(contact, owner);
)sql"},
    // Next: Migration{6, "...", R"sql(...)sql"},
};

// ------------------------------------------------------------------ applying

// Runs a script; returns SQLite's message on failure.
std::optional<std::string> execScript(sqlite3* db, const std::string& sql) {
  char* message = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &message);
  if (rc == SQLITE_OK) return std::nullopt;
  std::string text = message != nullptr ? message : sqlite3_errstr(rc);
  sqlite3_free(message);
  return text;
}

void applyOne(sqlite3* db, const std::filesystem::path& file, const Migration& step) {
  auto fail = [&](const std::string& reason) {
    if (sqlite3_get_autocommit(db) == 0) execScript(db, "ROLLBACK");
    throw StoreError("migration " + std::to_string(step.version) + " (" +
                     std::string(step.description) + ") failed on " + file.string() + ": " +
                     reason);
  };
  if (auto error = execScript(db, "BEGIN IMMEDIATE")) fail(*error);
  if (auto error = execScript(db, std::string(step.sql))) fail(*error);
  if (auto error = execScript(db, "PRAGMA user_version = " + std::to_string(step.version))) {
    fail(*error);
  }
  if (auto error = execScript(db, "COMMIT")) fail(*error);
}

}  // namespace

std::span<const Migration> storeMigrations() {
  return kMigrations;
}

int latestSchemaVersion() {
  return kMigrations.back().version;
}

int readSchemaVersion(sqlite3* db) {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, nullptr) != SQLITE_OK) {
    throw StoreError(std::string("cannot read schema version: ") + sqlite3_errmsg(db));
  }
  int version = 0;
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) version = sqlite3_column_int(stmt, 0);
  std::string message = rc == SQLITE_ROW ? "" : sqlite3_errmsg(db);
  sqlite3_finalize(stmt);
  if (rc != SQLITE_ROW) throw StoreError("cannot read schema version: " + message);
  return version;
}

MigrationOutcome applyMigrations(sqlite3* db, const std::filesystem::path& file,
                                 std::span<const Migration> migrations) {
  for (std::size_t i = 0; i < migrations.size(); ++i) {
    if (migrations[i].version != static_cast<int>(i) + 1) {
      throw StoreError("migration list is broken: entry " + std::to_string(i) + " has version " +
                       std::to_string(migrations[i].version));
    }
  }
  const int known = static_cast<int>(migrations.size());
  const int from = readSchemaVersion(db);
  if (from > known) {
    throw StoreError("database " + file.string() + " has schema version " + std::to_string(from) +
                     ", newer than this build knows (" + std::to_string(known) +
                     "); refusing to open it with an older binary");
  }
  if (from < 0) {
    throw StoreError("database " + file.string() + " has invalid schema version " +
                     std::to_string(from));
  }
  for (int version = from + 1; version <= known; ++version) {
    applyOne(db, file, migrations[static_cast<std::size_t>(version - 1)]);
  }
  return MigrationOutcome{from, known};
}

}  // namespace switchboard::store
