// How many rows each phone has waiting in the store (`queue` and
// `receipts_queue` together) or on their way there, so that a login can tell
// from memory that nothing waits for the phone and read no empty page.
//
// An upper bound, never below the truth: a write of rows counts them
// (adding) before it is queued, and rows leave the count (gone) only once
// their delete committed or the write that was to add them failed. Rows that
// leave the store another way (the expiry sweep, an operator's delete, the
// cluster's export) stay counted, so that phone's logins read the store, as
// they always did. At start the count is read from the store (set).
//
// What a login relies on (MessagingService::login): a phone counted zero
// *after* its session is in the SessionTable has nothing committed that the
// session could miss. A write counted later commits later, and what follows
// its commit looks the phone up in the table and tells the session
// (LiveSession::storeChanged). Thread-safe; phones with nothing counted take
// no memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace switchboard::messaging {

class StoredRows {
 public:
  // Before a write that adds up to `rows` rows for `phone` is queued.
  void adding(const std::string& phone, std::uint64_t rows = 1);
  // After the commit that deleted `rows` of the phone's rows, or once a write
  // counted by adding() failed to add them.
  void gone(const std::string& phone, std::uint64_t rows);
  // At start, before anything else counts: the rows the store holds for `phone`.
  void set(const std::string& phone, std::uint64_t rows);
  // Whether nothing is counted for the phone.
  bool none(const std::string& phone) const;
  // Phones with rows counted.
  std::size_t phones() const;
  // A cluster node's logins always read the store (its import writes rows no
  // count sees): from now on nothing is counted, what was is dropped, and
  // none() is false for every phone.
  void stopCounting();

 private:
  std::atomic<bool> counting_{true};
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::uint64_t> rows_;
};

}  // namespace switchboard::messaging
