// Registration and login: 5-digit codes (policy from the auth plugin), device
// keys (random 32 bytes, stored only as a hash), and opening a session.

#include <sodium.h>

#include "messaging/durable_write.h"
#include "messaging/field_rules.h"
#include "messaging/messaging_service.h"
#include "net/network_thread.h"
#include "notify/sms_sink.h"
#include "plugin/plugin_manager.h"
#include "store/store.h"
#include "switchboard/plugin_api.h"

namespace switchboard::messaging {

using plugin::AuthPlugin;
using session::LiveSession;
using session::PresenceState;

namespace {

constexpr std::size_t kKeyBytes = 32;

static_assert(crypto_generichash_BYTES == std::tuple_size_v<KnownUsers::KeyHash>);

KnownUsers::KeyHash keyHash(std::string_view key) {
  KnownUsers::KeyHash hash;
  crypto_generichash(hash.data(), hash.size(), reinterpret_cast<const unsigned char*>(key.data()),
                     key.size(), nullptr, 0);
  return hash;
}

// As the store keeps it (a blob).
std::string hashBytes(const KnownUsers::KeyHash& hash) {
  return std::string(reinterpret_cast<const char*>(hash.data()), hash.size());
}

bool sameHash(const KnownUsers::KeyHash& a, const void* b) {
  return sodium_memcmp(a.data(), b, a.size()) == 0;
}

template <class R>
R authValue(plugin::CallResult<R> result) {
  if (!result.ok()) refuse("auth plugin failed: " + result.error);
  return std::move(*result.value);
}

}  // namespace

kj::Promise<std::uint32_t> MessagingService::requestCode(std::string phone, std::string peer) {
  requirePhone(phone, "phone");
  auto decision = authValue(
      plugins_.call<AuthPlugin>([&](AuthPlugin& auth) { return auth.requestCode(phone, peer); }));
  if (!decision.ok) refuse(decision.error);
  ++counters_.codesRequested;
  sms_.send(phone, decision.code, decision.smsText);
  return decision.expiresInSeconds;
}

kj::Promise<std::string> MessagingService::verify(std::string phone, std::string code,
                                                  std::string deviceName) {
  requirePhone(phone, "phone");
  requireName(deviceName, "deviceName");
  if (code.size() > 16) refuse("code is too long");
  auto decision = authValue(
      plugins_.call<AuthPlugin>([&](AuthPlugin& auth) { return auth.verifyCode(phone, code); }));
  if (!decision.ok) refuse(decision.error);

  std::string key(kKeyBytes, '\0');
  randombytes_buf(key.data(), key.size());
  if (cluster_) {
    std::string hash = hashBytes(keyHash(key));  // before `key` moves
    return verifyClustered(phone, std::move(hash), deviceName, std::move(key));
  }
  std::int64_t now = nowMs();
  // The old device's key must never be answered from memory once the new one
  // is in (known_users.h): from here until the write is over no login
  // remembers this phone's key; once it committed the new one is remembered.
  knownUsers_.beginKeyChange(phone);
  KnownUsers::Device device{0, keyHash(key)};
  return writeDurably<KnownUsers::Device>(
             store_,
             [phone, device, deviceName, now](store::Connection& db) mutable {
               // A new user gets the next number (1 is "system").
               db.prepare(
                     "INSERT OR IGNORE INTO users(phone, created_ms, number) VALUES "
                     "(?, ?, (SELECT COALESCE(MAX(number), 1) + 1 FROM users))")
                   .bind(1, phone)
                   .bind(2, now)
                   .run();
               db.prepare(
                     "INSERT OR REPLACE INTO devices(phone, key_hash, device_name, "
                     "created_ms) VALUES (?, ?, ?, ?)")
                   .bind(1, phone)
                   .bindBlob(2, hashBytes(device.keyHash))
                   .bind(3, deviceName)
                   .bind(4, now)
                   .run();
               auto user = db.prepare("SELECT number FROM users WHERE phone = ?").bind(1, phone);
               if (user.step()) device.number = static_cast<std::uint64_t>(user.columnInt(0));
               return device;
             },
             // On the writer thread, in commit order (the failure is below).
             [this, phone](KnownUsers::Device& committed) {
               knownUsers_.endKeyChange(phone, committed);
             })
      .then(
          [this, phone, key = std::move(key)](KnownUsers::Device) {
            ++counters_.registrations;
            // The old device's key no longer matches; its live session must go too.
            kick(phone, "replaced by a new device");
            return key;
          },
          [this, phone](kj::Exception&& exception) -> std::string {
            knownUsers_.endKeyChange(phone);
            kj::throwFatalException(kj::mv(exception));
          });
}

namespace {

// The user number of `phone` if `key` is its device key. Single node
// (`remembered` set): from the device remembered at an earlier login
// (known_users.h); a key that does not match it is checked against the store
// all the same, and a match read there is remembered. The store read opens the
// login's read transaction (`reads`).
std::optional<std::uint64_t> checkKey(store::Store& store, KnownUsers* remembered,
                                      const std::string& phone, std::string_view key,
                                      std::unique_ptr<store::ReadTransaction>& reads) {
  if (key.size() != kKeyBytes) return std::nullopt;
  KnownUsers::KeyHash hash = keyHash(key);
  std::uint64_t epoch = 0;
  if (remembered) {
    auto device = remembered->deviceOf(phone);
    if (device && sameHash(device->keyHash, hash.data())) return device->number;
    epoch = remembered->keyEpoch();
  }
  reads = store.readTransaction();
  std::optional<std::uint64_t> number;
  store.read([&](store::Connection& db) {
    auto row = db.prepare(
                     "SELECT d.key_hash, u.number FROM devices d JOIN users u ON u.phone = d.phone "
                     "WHERE d.phone = ?")
                   .bind(1, phone);
    if (!row.step()) return;
    std::string stored = row.columnBlob(0);
    if (stored.size() != hash.size() || !sameHash(hash, stored.data())) return;
    number = static_cast<std::uint64_t>(row.columnInt(1));
  });
  if (number && remembered) remembered->rememberDevice(phone, {*number, hash}, epoch);
  return number;
}

}  // namespace

std::shared_ptr<LiveSession> MessagingService::login(std::string phone, std::string key,
                                                     proto::Inbox::Client inbox,
                                                     const ConnectionContext& connection) {
  requirePhone(phone, "phone");
  // The login's reads (the key unless it is remembered, then the first pages
  // of its queues) are one read transaction: SQLite takes and drops a WAL read
  // mark per transaction, two fcntl calls each. It is opened by the first read
  // that is needed: on a single node a phone whose key is remembered and
  // for whom nothing waits reads nothing at all.
  std::unique_ptr<store::ReadTransaction> reads;
  std::optional<std::uint64_t> number =
      checkKey(store_, cluster_ ? nullptr : &knownUsers_, phone, key, reads);
  if (!number) {
    ++counters_.failedLogins;
    refuse("invalid device key for " + phone);
  }

  session::SessionRef ref;
  ref.phone = phone;
  ref.number = *number;
  ref.sessionId = sessions_.nextSessionId();
  ref.threadIndex = connection.threadIndex;
  ref.connectionId = connection.connectionId;
  ref.peer = connection.peer;
  ref.since = nowMs();
  ref.gauges = std::make_shared<session::SessionGauges>();
  auto close = [this, thread = connection.threadIndex, id = connection.connectionId]() {
    closeConnection_(thread, id);
  };
  net::NetworkThread& thread = *threads_.at(connection.threadIndex);
  auto live =
      std::make_shared<LiveSession>(*this, thread, options_.limits, ref, kj::mv(inbox), close);
  ref.session = live;
  if (auto replaced = sessions_.attach(std::move(ref))) {
    if (replaced->threadIndex == connection.threadIndex &&
        replaced->connectionId == connection.connectionId) {
      // A second login on the same connection: end the old session, keep the
      // line the new one lives on.
      if (auto old = replaced->session.lock()) old->kick("logged in elsewhere", false);
    } else {
      kick(*replaced, "logged in elsewhere");
    }
  }
  ++counters_.logins;
  // Rows this phone already took may still be on their way out of the store:
  // page only once those deletes are durable, so nothing returned comes back.
  // In a cluster the session first claims the phone and imports what waits
  // for it in the stream (that import is queued after any such delete).
  bool awaitStore = cluster_ != nullptr || deletesInFlight(phone);
  // Single node, nothing counted for the phone *now*, after the attach: any
  // write counted later finds the session in the table once it committed and
  // tells it (stored_rows.h), so the session starts caught up, reading nothing.
  bool nothingStored = !awaitStore && storedRows_.none(phone);
  // The ordering contract of session/session_table.h: what was committed for
  // the phone before the attach is read by the paging below (the key's
  // snapshot is renewed if a write committed since, and a transaction opened
  // now begins after the attach), or its writer finds the session in the
  // table and tells it (storeChanged).
  if (reads) {
    reads->refresh();
  } else if (!awaitStore && !nothingStored) {
    reads = store_.readTransaction();  // two pages: one snapshot
  }
  live->start(awaitStore      ? session::StoredAtStart::settling
              : nothingStored ? session::StoredAtStart::nothing
                              : session::StoredAtStart::unknown);
  if (cluster_) {
    claimAndImport(live);
  } else if (awaitStore) {
    store_.write([](store::Connection&) {},
                 [this, weak = std::weak_ptr<LiveSession>(live),
                  index = connection.threadIndex](std::optional<std::string>) {
                   postTo(index, [weak]() {
                     if (auto s = weak.lock()) s->spillDone(session::SpillKind::handOver);
                   });
                 });
  }
  fanOutPresence(phone, PresenceState::online, 0);
  return live;
}

}  // namespace switchboard::messaging
