#include "notify/sms_outbox.h"

namespace switchboard::notify {

SmsOutbox::SmsOutbox(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

void SmsOutbox::add(SmsRecord record) {
  std::lock_guard lock(mutex_);
  if (records_.size() == capacity_) records_.pop_front();
  records_.push_back(std::move(record));
}

std::vector<SmsRecord> SmsOutbox::read(const std::optional<std::string>& phone,
                                       std::size_t limit) const {
  std::vector<SmsRecord> out;
  std::lock_guard lock(mutex_);
  for (auto it = records_.rbegin(); it != records_.rend() && out.size() < limit; ++it) {
    if (phone && it->phone != *phone) continue;
    out.push_back(*it);
  }
  return out;
}

}  // namespace switchboard::notify
