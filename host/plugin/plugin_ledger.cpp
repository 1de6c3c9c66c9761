#include "plugin/plugin_ledger.h"

namespace switchboard::plugin {

PluginLedger::PluginLedger(store::Store& store) : store_(store) {
  // The table belongs to this room; IF NOT EXISTS keeps it compatible with a
  // store migration that creates the same table.
  store_.writeAndWait([](store::Connection& db) {
    db.exec(
        "CREATE TABLE IF NOT EXISTS plugin_ledger ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " at_ms INTEGER NOT NULL,"
        " actor TEXT NOT NULL,"
        " kind TEXT NOT NULL,"
        " from_version TEXT,"
        " to_version TEXT,"
        " sha256 TEXT,"
        " pause_us INTEGER,"
        " result TEXT NOT NULL,"
        " reason TEXT)");
    db.exec("CREATE INDEX IF NOT EXISTS plugin_ledger_kind ON plugin_ledger(kind, id)");
  });
}

void PluginLedger::append(const LedgerRow& row) {
  store_.writeAndWait([&row](store::Connection& db) {
    auto insert = db.prepare(
        "INSERT INTO plugin_ledger (at_ms, actor, kind, from_version, to_version, sha256,"
        " pause_us, result, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
    insert.bind(1, row.atMs).bind(2, row.actor).bind(3, row.kind);
    if (row.fromVersion.empty()) {
      insert.bindNull(4);
    } else {
      insert.bind(4, row.fromVersion);
    }
    if (row.toVersion.empty()) {
      insert.bindNull(5);
    } else {
      insert.bind(5, row.toVersion);
    }
    if (row.sha256.empty()) {
      insert.bindNull(6);
    } else {
      insert.bind(6, row.sha256);
    }
    insert.bind(7, static_cast<std::int64_t>(row.pauseUs));
    insert.bind(8, row.result).bind(9, row.reason);
    insert.run();
  });
}

std::vector<LedgerRow> PluginLedger::rows(const std::optional<std::string>& kind,
                                          std::size_t limit) const {
  std::vector<LedgerRow> out;
  store_.read([&](store::Connection& db) {
    std::string sql =
        "SELECT id, at_ms, actor, kind, from_version, to_version, sha256, pause_us, result,"
        " reason FROM plugin_ledger";
    if (kind) sql += " WHERE kind = ?";
    sql += " ORDER BY id DESC LIMIT ?";
    auto query = db.prepare(sql);
    int index = 1;
    if (kind) query.bind(index++, *kind);
    query.bind(index, static_cast<std::int64_t>(limit));
    while (query.step()) {
      LedgerRow row;
      row.id = query.columnInt(0);
      row.atMs = query.columnInt(1);
      row.actor = query.columnText(2);
      row.kind = query.columnText(3);
      row.fromVersion = query.columnIsNull(4) ? "" : query.columnText(4);
      row.toVersion = query.columnIsNull(5) ? "" : query.columnText(5);
      row.sha256 = query.columnIsNull(6) ? "" : query.columnText(6);
      row.pauseUs = static_cast<std::uint64_t>(query.columnInt(7));
      row.result = query.columnText(8);
      row.reason = query.columnIsNull(9) ? "" : query.columnText(9);
      out.push_back(std::move(row));
    }
  });
  return out;
}

}  // namespace switchboard::plugin
