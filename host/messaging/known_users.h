// Registered users seen so far, phone <-> user number: the per-message checks
// (is a send's recipient registered, whose is a receipt's message id) answer
// from here and read the store only for a phone or number not seen yet.
//
// Positive only: what is here exists in the store's `users` table; what is
// not here may exist too. A user leaves only through forget(), which the
// operator's delete calls once the row is gone. Thread-safe.
//
// Device keys (single node only): the hash of the device key of each phone
// that logged in, so the next login checks a key from memory instead of
// reading `devices`. The rule that keeps a replaced or revoked key from ever
// being accepted from here: every write that replaces or removes a phone's
// device (verify's new device, an operator's revoke or delete) is bracketed by
// beginKeyChange() before it is queued and endKeyChange() once it committed or
// failed (a new device is remembered then: the next login needs no read). From begin to end nothing
// of the phone is answered or remembered, so logins read the store, which is right before and after
// the commit; and a login's read that may predate a change (keyEpoch() moved since it was taken) is
// not remembered. A change whose end never comes (its promise was dropped) leaves the phone read
// from the store: safe, only slower. A cluster's nodes change each other's devices, so cluster mode
// does not use these.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>

namespace switchboard::messaging {

class KnownUsers {
 public:
  using KeyHash = std::array<unsigned char, 32>;  // BLAKE2b-256 of the device key
  struct Device {
    std::uint64_t number = 0;
    KeyHash keyHash{};
  };

  std::optional<std::uint64_t> numberOf(const std::string& phone) const;
  std::optional<std::string> phoneOf(std::uint64_t number) const;
  void remember(const std::string& phone, std::uint64_t number);
  // Also forgets the phone's device.
  void forget(const std::string& phone);

  // The device remembered for `phone`; none while a change of it is in flight.
  std::optional<Device> deviceOf(const std::string& phone) const;
  // Read before the store read whose device rememberDevice() may keep.
  std::uint64_t keyEpoch() const;
  // Keeps what a login read from the store after keyEpoch() returned `epoch`,
  // unless a key change began or ended since, or one of the phone's is in flight.
  void rememberDevice(const std::string& phone, const Device& device, std::uint64_t epoch);
  void beginKeyChange(const std::string& phone);
  // `committed`: the device the change wrote, given on the store's writer
  // thread right after its commit (so in commit order): the store holds
  // exactly it from then until the next change commits, so it is remembered.
  void endKeyChange(const std::string& phone, std::optional<Device> committed = std::nullopt);
  // For a store write with a done callback: begins the change now and returns
  // `done` wrapped to end it first (the store calls it after the commit or the
  // failure, whatever became of whoever waited).
  using WriteDone = std::function<void(std::optional<std::string> error)>;
  WriteDone keyChange(const std::string& phone, WriteDone done);

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_map<std::string, std::uint64_t> numbers_;
  std::unordered_map<std::uint64_t, std::string> phones_;
  std::unordered_map<std::string, Device> devices_;
  std::unordered_map<std::string, unsigned> changing_;  // phones with key changes in flight
  std::uint64_t keyEpoch_ = 0;                          // moves at every begin and end
};

}  // namespace switchboard::messaging
