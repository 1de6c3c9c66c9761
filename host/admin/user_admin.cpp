#include "admin/user_admin.h"

#include <stdexcept>

#include "store/store.h"

namespace switchboard::admin {
namespace {

// One row per user; the prefix is compared with substr so it needs no
// LIKE escaping.
constexpr const char* kSummarySql = R"sql(
SELECT u.phone, u.created_ms, COALESCE(u.last_seen_ms, 0), COALESCE(d.device_name, ''),
  u.queued,
  (SELECT COUNT(*) FROM contacts c WHERE c.owner = u.phone),
  (SELECT COUNT(*) FROM group_members g WHERE g.member = u.phone)
FROM users u LEFT JOIN devices d ON d.phone = u.phone
)sql";

UserSummary readSummary(const store::Statement& row) {
  UserSummary user;
  user.phone = row.columnText(0);
  user.createdMs = row.columnInt(1);
  user.lastSeenMs = row.columnInt(2);
  user.deviceName = row.columnText(3);
  user.queuedMessages = static_cast<std::uint64_t>(row.columnInt(4));
  user.contacts = static_cast<std::uint32_t>(row.columnInt(5));
  user.groups = static_cast<std::uint32_t>(row.columnInt(6));
  return user;
}

// Thrown inside a write to refuse it; its text goes to the caller as is.
class Refusal : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Refuses a write about a phone that is not registered.
void requireUser(store::Connection& db, const std::string& phone) {
  auto exists = db.prepare("SELECT 1 FROM users WHERE phone = ?1");
  exists.bind(1, phone);
  if (!exists.step()) throw Refusal("no user " + phone);
}

// Runs `fn` as one write and reports a refusal's sentence, or the store's.
void refusableWrite(store::Store& store, std::function<void(store::Connection&)> fn,
                    UserAdmin::Done done) {
  auto refusal = std::make_shared<std::optional<std::string>>();
  store.write(
      [fn = std::move(fn), refusal](store::Connection& db) {
        try {
          fn(db);
        } catch (const Refusal& e) {
          *refusal = e.what();
          throw;
        }
      },
      [refusal, done = std::move(done)](std::optional<std::string> error) {
        if (error && *refusal) error = **refusal;
        done(std::move(error));
      });
}

}  // namespace

std::vector<UserSummary> UserAdmin::list(const std::string& phonePrefix, std::size_t limit) const {
  std::vector<UserSummary> users;
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare(std::string(kSummarySql) +
                           "WHERE substr(u.phone, 1, length(?1)) = ?1 ORDER BY u.phone LIMIT ?2");
    rows.bind(1, phonePrefix).bind(2, static_cast<std::int64_t>(limit));
    while (rows.step()) users.push_back(readSummary(rows));
  });
  return users;
}

std::optional<UserSummary> UserAdmin::find(const std::string& phone) const {
  std::optional<UserSummary> user;
  store_.read([&](store::Connection& db) {
    auto rows = db.prepare(std::string(kSummarySql) + "WHERE u.phone = ?1");
    rows.bind(1, phone);
    if (rows.step()) user = readSummary(rows);
  });
  return user;
}

void UserAdmin::remove(const std::string& phone, Done done) {
  refusableWrite(
      store_,
      [phone](store::Connection& db) {
        requireUser(db, phone);
        for (const char* sql : {
                 "DELETE FROM queue WHERE recipient = ?1",
                 "DELETE FROM receipts_queue WHERE recipient = ?1",
                 "DELETE FROM contacts WHERE owner = ?1 OR contact = ?1",
                 "DELETE FROM group_members WHERE member = ?1",
                 "DELETE FROM dedup WHERE sender = ?1",
                 "DELETE FROM devices WHERE phone = ?1",
                 "DELETE FROM users WHERE phone = ?1",
             }) {
          db.prepare(sql).bind(1, phone).run();
        }
      },
      std::move(done));
}

void UserAdmin::revokeKey(const std::string& phone, Done done) {
  refusableWrite(
      store_,
      [phone](store::Connection& db) {
        requireUser(db, phone);
        db.prepare("DELETE FROM devices WHERE phone = ?1").bind(1, phone).run();
        if (db.changes() == 0) throw Refusal(phone + " has no device key (already revoked)");
      },
      std::move(done));
}

}  // namespace switchboard::admin
