// Registered users seen so far, phone <-> user number: the per-message checks
// (is a send's recipient registered, whose is a receipt's message id) answer
// from here and read the store only for a phone or number not seen yet.
//
// Positive only: what is here exists in the store's `users` table; what is
// not here may exist too. A user leaves only through forget(), which the
// operator's delete calls once the row is gone. Thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>

namespace switchboard::messaging {

class KnownUsers {
 public:
  std::optional<std::uint64_t> numberOf(const std::string& phone) const;
  std::optional<std::string> phoneOf(std::uint64_t number) const;
  void remember(const std::string& phone, std::uint64_t number);
  void forget(const std::string& phone);

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_map<std::string, std::uint64_t> numbers_;
  std::unordered_map<std::uint64_t, std::string> phones_;
};

}  // namespace switchboard::messaging
