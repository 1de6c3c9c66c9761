#include "store/migrations.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <set>
#include <string>
#include <vector>

#include "store/database_handle.h"
#include "store/store.h"
#include "temp_dir.h"

namespace switchboard::store {
namespace {

using testing::TempDir;

StoreOptions optionsIn(const TempDir& dir) {
  StoreOptions options;
  options.dataDir = dir.path() / "data";
  return options;
}

std::set<std::string> namesOfType(Store& store, const char* type) {
  std::set<std::string> names;
  store.read([&](Connection& connection) {
    auto query = connection.prepare("SELECT name FROM sqlite_master WHERE type = ?1");
    query.bind(1, std::string_view(type));
    while (query.step()) names.insert(query.columnText(0));
  });
  return names;
}

std::int64_t pragmaValue(Store& store, const char* pragma) {
  std::int64_t value = -1;
  store.read([&](Connection& connection) {
    auto query = connection.prepare(std::string("PRAGMA ") + pragma);
    if (query.step()) value = query.columnInt(0);
  });
  return value;
}

TEST(Migrations, ListIsNumberedOneToLatestInOrder) {
  auto migrations = storeMigrations();
  ASSERT_FALSE(migrations.empty());
  for (std::size_t i = 0; i < migrations.size(); ++i) {
    EXPECT_EQ(migrations[i].version, static_cast<int>(i) + 1);
    EXPECT_FALSE(migrations[i].description.empty());
  }
  EXPECT_EQ(latestSchemaVersion(), static_cast<int>(migrations.size()));
}

TEST(Migrations, FromEmptyCreatesEveryTableAtLatestVersion) {
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  EXPECT_EQ(store->schemaVersion(), latestSchemaVersion());
  EXPECT_EQ(pragmaValue(*store, "user_version"), latestSchemaVersion());
  EXPECT_EQ(store->path(), dir.path() / "data" / "switchboard.db");

  std::set<std::string> tables = namesOfType(*store, "table");
  for (const char* table : {"users", "devices", "contacts", "groups", "group_members", "queue",
                            "receipts_queue", "dedup", "plugin_ledger", "counters"}) {
    EXPECT_TRUE(tables.count(table)) << "missing table " << table;
  }
  std::set<std::string> indexes = namesOfType(*store, "index");
  EXPECT_TRUE(indexes.count("queue_by_recipient"));
  EXPECT_TRUE(indexes.count("users_by_number"));
  EXPECT_FALSE(tables.count("messages")) << "migration 3 replaces messages by queue";
  EXPECT_TRUE(indexes.count("receipts_queue_by_recipient"));
}

TEST(Migrations, ReopeningAnUpToDateDatabaseChangesNothing) {
  TempDir dir;
  std::int64_t schemaCookie = 0;
  {
    auto store = Store::open(optionsIn(dir));
    store->writeAndWait([](Connection& connection) {
      connection.exec("INSERT INTO users(phone, created_ms) VALUES ('+100', 1)");
    });
    // schema_version counts every schema change: re-running a migration moves it.
    schemaCookie = pragmaValue(*store, "schema_version");
  }
  auto store = Store::open(optionsIn(dir));
  EXPECT_EQ(store->schemaVersion(), latestSchemaVersion());
  EXPECT_EQ(pragmaValue(*store, "schema_version"), schemaCookie);
  std::int64_t users = 0;
  store->read([&](Connection& connection) {
    auto query = connection.prepare("SELECT count(*) FROM users");
    ASSERT_TRUE(query.step());
    users = query.columnInt(0);
  });
  EXPECT_EQ(users, 1);
}

TEST(Migrations, Version4DropsTheTimeIndexesAndKeepsEveryRowOfAVersion3Database) {
  TempDir dir;
  std::filesystem::path file = optionsIn(dir).dataDir / "switchboard.db";
  std::filesystem::create_directories(file.parent_path());
  {
    DatabaseHandle db = openDatabase(file, AccessMode::kReadWrite);
    applyMigrations(db.get(), file, storeMigrations().first(3));
    ASSERT_EQ(readSchemaVersion(db.get()), 3);
    Connection connection(db.get());
    connection.exec(
        "INSERT INTO dedup(sender, client_msg_id, server_id, sent_ms) VALUES "
        "('+1', 'a', 11, 100), ('+1', 'b', 12, 200), ('+2', 'a', 13, 300)");
    connection.exec(
        "INSERT INTO receipts_queue(recipient, server_id, reader, kind, at_ms) VALUES "
        "('+1', 11, '+3', 0, 100), ('+1', 12, '+3', 1, 200)");
  }
  auto store = Store::open(optionsIn(dir));
  EXPECT_EQ(store->schemaVersion(), latestSchemaVersion());
  std::set<std::string> indexes = namesOfType(*store, "index");
  EXPECT_FALSE(indexes.count("dedup_by_time"));
  EXPECT_FALSE(indexes.count("receipts_queue_by_time"));
  EXPECT_TRUE(indexes.count("receipts_queue_by_recipient"));
  std::vector<std::string> dedup;
  std::vector<std::int64_t> receipts;
  store->read([&](Connection& connection) {
    auto rows = connection.prepare(
        "SELECT sender || ' ' || client_msg_id || ' ' || server_id || ' ' || sent_ms FROM dedup "
        "ORDER BY rowid");
    while (rows.step()) dedup.push_back(rows.columnText(0));
    auto ticks = connection.prepare("SELECT server_id FROM receipts_queue ORDER BY id");
    while (ticks.step()) receipts.push_back(ticks.columnInt(0));
  });
  EXPECT_EQ(dedup, (std::vector<std::string>{"+1 a 11 100", "+1 b 12 200", "+2 a 13 300"}));
  EXPECT_EQ(receipts, (std::vector<std::int64_t>{11, 12}));
}

TEST(Migrations, ThePhonesWatchingAPhoneAreFoundByIndex) {
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  std::string plan;
  store->read([&](Connection& connection) {
    auto query =
        connection.prepare("EXPLAIN QUERY PLAN SELECT owner FROM contacts WHERE contact = ?1");
    while (query.step()) plan += query.columnText(3) + "\n";
  });
  EXPECT_NE(plan.find("USING COVERING INDEX contacts_by_contact (contact=?)"), std::string::npos)
      << plan;
}

TEST(Migrations, DatabaseFromANewerBinaryIsRefused) {
  TempDir dir;
  std::filesystem::path file;
  {
    auto store = Store::open(optionsIn(dir));
    file = store->path();
  }
  {
    DatabaseHandle db = openDatabase(file, AccessMode::kReadWrite);
    std::string sql = "PRAGMA user_version = " + std::to_string(latestSchemaVersion() + 1);
    ASSERT_EQ(sqlite3_exec(db.get(), sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  }
  try {
    Store::open(optionsIn(dir));
    FAIL() << "a database newer than the binary was opened";
  } catch (const StoreError& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("newer than this build knows"), std::string::npos) << message;
    EXPECT_NE(message.find(file.string()), std::string::npos) << message;
  }
}

TEST(Migrations, FailedStepRollsBackToThePreviousVersion) {
  TempDir dir;
  std::filesystem::path file = dir.path() / "m.db";
  DatabaseHandle db = openDatabase(file, AccessMode::kReadWrite);
  const Migration steps[] = {
      {1, "first", "CREATE TABLE a(x INTEGER);"},
      {2, "second, broken halfway", "CREATE TABLE b(x INTEGER); INSERT INTO nowhere VALUES (1);"},
  };
  try {
    applyMigrations(db.get(), file, steps);
    FAIL() << "a broken migration succeeded";
  } catch (const StoreError& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("migration 2 (second, broken halfway) failed"), std::string::npos)
        << message;
    EXPECT_NE(message.find("no such table: nowhere"), std::string::npos) << message;
  }
  EXPECT_EQ(readSchemaVersion(db.get()), 1);
  Connection connection(db.get());
  auto query = connection.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'b'");
  ASSERT_TRUE(query.step());
  EXPECT_EQ(query.columnInt(0), 0) << "half of step 2 was kept";
}

TEST(Migrations, ForeignKeysAreEnforcedOnTheWriter) {
  TempDir dir;
  auto store = Store::open(optionsIn(dir));
  store->writeAndWait([](Connection& connection) {
    connection.exec("INSERT INTO users(phone, created_ms) VALUES ('+1', 1)");
    connection.exec(
        "INSERT INTO devices(phone, key_hash, device_name, created_ms) VALUES ('+1', x'00', 'p', "
        "1)");
    connection.exec("DELETE FROM users WHERE phone = '+1'");
  });
  std::int64_t synchronous = -1;
  store->writeAndWait([&](Connection& connection) {
    auto query = connection.prepare("PRAGMA synchronous");
    ASSERT_TRUE(query.step());
    synchronous = query.columnInt(0);
  });
  EXPECT_EQ(synchronous, 2) << "the writer must run with synchronous=FULL";
  std::int64_t devices = -1;
  std::string journal;
  store->read([&](Connection& connection) {
    auto count = connection.prepare("SELECT count(*) FROM devices");
    ASSERT_TRUE(count.step());
    devices = count.columnInt(0);
    auto mode = connection.prepare("PRAGMA journal_mode");
    ASSERT_TRUE(mode.step());
    journal = mode.columnText(0);
  });
  EXPECT_EQ(devices, 0) << "ON DELETE CASCADE did not run: foreign_keys is off";
  EXPECT_EQ(journal, "wal");
  EXPECT_THROW(store->writeAndWait([](Connection& connection) {
    connection.exec(
        "INSERT INTO devices(phone, key_hash, device_name, created_ms) VALUES ('+2', x'00', 'p', "
        "1)");
  }),
               StoreError);
}

}  // namespace
}  // namespace switchboard::store
