// The SMS outbox: what the host handed to its SMS sink, newest first, for the admin API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace switchboard::notify {

// One SMS as the outbox remembers it. A sink that hands SMS to a real gateway stores the
// code masked ("*****", also inside `text`), so the admin API never shows a live code.
struct SmsRecord {
  std::string phone;
  std::string code;
  std::string text;
  std::int64_t atMs = 0;  // Unix epoch milliseconds, when the outcome was known
  std::string
      outcome;  // "logged", "sent", or why not: "failed: exit status 1: ...", "dropped: ..."
};

// A bounded, thread-safe ring of the last `capacity` SMS records. Any thread may add or
// read; reads copy, so a caller never holds a reference into the ring. When full, adding
// forgets the oldest record.
class SmsOutbox {
 public:
  explicit SmsOutbox(std::size_t capacity = 1000);

  void add(SmsRecord record);

  // Newest first; only records for `phone` when given; at most `limit` records.
  std::vector<SmsRecord> read(const std::optional<std::string>& phone, std::size_t limit) const;

 private:
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::deque<SmsRecord> records_;  // oldest at the front
};

}  // namespace switchboard::notify
