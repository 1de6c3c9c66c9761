#include "messaging/stored_rows.h"

#include <spdlog/spdlog.h>

namespace switchboard::messaging {

void StoredRows::adding(const std::string& phone, std::uint64_t rows) {
  if (rows == 0 || !counting_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(mutex_);
  rows_[phone] += rows;
}

void StoredRows::gone(const std::string& phone, std::uint64_t rows) {
  if (rows == 0 || !counting_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(mutex_);
  auto it = rows_.find(phone);
  std::uint64_t counted = it == rows_.end() ? 0 : it->second;
  if (rows > counted) {
    // Rows this count never saw: nothing is known of the phone's queue any
    // more, so its logins keep reading.
    spdlog::debug("stored rows of {}: {} gone, {} counted", phone, rows, counted);
    return;
  }
  if (rows == counted) {
    rows_.erase(it);
  } else {
    it->second -= rows;
  }
}

void StoredRows::set(const std::string& phone, std::uint64_t rows) {
  if (!counting_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(mutex_);
  if (rows == 0) {
    rows_.erase(phone);
  } else {
    rows_[phone] = rows;
  }
}

bool StoredRows::none(const std::string& phone) const {
  if (!counting_.load(std::memory_order_relaxed)) return false;
  std::lock_guard lock(mutex_);
  return !rows_.contains(phone);
}

std::size_t StoredRows::phones() const {
  std::lock_guard lock(mutex_);
  return rows_.size();
}

void StoredRows::stopCounting() {
  counting_.store(false, std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  rows_.clear();
}

}  // namespace switchboard::messaging
