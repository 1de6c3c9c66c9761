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
  devices_.erase(phone);
  auto it = numbers_.find(phone);
  if (it == numbers_.end()) return;
  phones_.erase(it->second);
  numbers_.erase(it);
}

std::optional<KnownUsers::Device> KnownUsers::deviceOf(const std::string& phone) const {
  std::shared_lock lock(mutex_);
  auto it = devices_.find(phone);
  if (it == devices_.end()) return std::nullopt;
  return it->second;
}

std::uint64_t KnownUsers::keyEpoch() const {
  std::shared_lock lock(mutex_);
  return keyEpoch_;
}

void KnownUsers::rememberDevice(const std::string& phone, const Device& device,
                                std::uint64_t epoch) {
  std::unique_lock lock(mutex_);
  if (epoch != keyEpoch_ || changing_.contains(phone)) return;
  devices_[phone] = device;
}

void KnownUsers::beginKeyChange(const std::string& phone) {
  std::unique_lock lock(mutex_);
  ++keyEpoch_;
  ++changing_[phone];
  devices_.erase(phone);
}

void KnownUsers::endKeyChange(const std::string& phone, std::optional<Device> committed) {
  std::unique_lock lock(mutex_);
  ++keyEpoch_;
  auto it = changing_.find(phone);
  if (it != changing_.end() && --it->second == 0) changing_.erase(it);
  if (committed) {
    devices_[phone] = *committed;
  } else {
    devices_.erase(phone);
  }
}

KnownUsers::WriteDone KnownUsers::keyChange(const std::string& phone, WriteDone done) {
  beginKeyChange(phone);
  return [this, phone, done = std::move(done)](std::optional<std::string> error) {
    endKeyChange(phone);
    done(std::move(error));
  };
}

}  // namespace switchboard::messaging
