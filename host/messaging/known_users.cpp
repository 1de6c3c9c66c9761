#include "messaging/known_users.h"

#include <mutex>

namespace switchboard::messaging {

std::optional<std::uint64_t> KnownUsers::numberOf(const std::string& phone) const {
  std::shared_lock lock(mutex_);
  auto it = numbers_.find(phone);
  if (it == numbers_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> KnownUsers::phoneOf(std::uint64_t number) const {
  std::shared_lock lock(mutex_);
  auto it = phones_.find(number);
  if (it == phones_.end()) return std::nullopt;
  return it->second;
}

void KnownUsers::remember(const std::string& phone, std::uint64_t number) {
  std::unique_lock lock(mutex_);
  numbers_[phone] = number;
  phones_[number] = phone;
}

void KnownUsers::forget(const std::string& phone) {
  std::unique_lock lock(mutex_);
  auto it = numbers_.find(phone);
  if (it == numbers_.end()) return;
  phones_.erase(it->second);
  numbers_.erase(it);
}

}  // namespace switchboard::messaging
