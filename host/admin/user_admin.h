// The operator's operations on the users table and everything hanging off a
// user: listing, one user's summary, deleting a user, revoking its key.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace switchboard::store {
class Store;
}

namespace switchboard::admin {

struct UserSummary {
  std::string phone;
  std::int64_t createdMs = 0;
  std::int64_t lastSeenMs = 0;
  std::string deviceName;            // empty when the user has no device key
  std::uint64_t queuedMessages = 0;  // not yet delivered to the phone
  std::uint32_t contacts = 0;
  std::uint32_t groups = 0;
};

// Reads run on the caller's thread (a pooled read connection: quick, never
// waits for the writer). Writes are queued on the store's writer; `done` runs
// on the writer thread with nullopt once durable, or with one sentence saying
// why nothing changed ("no user +15550001").
class UserAdmin {
 public:
  using Done = std::function<void(std::optional<std::string> error)>;

  explicit UserAdmin(store::Store& store) : store_(store) {}

  // Users whose phone starts with `phonePrefix`, ordered by phone.
  std::vector<UserSummary> list(const std::string& phonePrefix, std::size_t limit) const;
  std::optional<UserSummary> find(const std::string& phone) const;

  // One write: the user's queued messages and receipts, its contacts (both
  // directions), group memberships, device and user row.
  void remove(const std::string& phone, Done done);
  // Deletes the device row, so the key stops working.
  void revokeKey(const std::string& phone, Done done);

 private:
  store::Store& store_;
};

}  // namespace switchboard::admin
