// Phones that may be someone's contact. A phone's presence goes only to the
// phones that have it as a contact (presence.cpp), so a phone that is nobody's
// contact needs no store read to find its watchers when it logs in, changes
// its state or leaves.
//
// Positive and conservative: a phone is added before a contact row naming it
// is written, and is never removed (a phone whose contacts were all removed
// stays, and its presence changes read the store, as before). At start every
// phone the `contacts` table names is added. Single node only: a cluster's
// nodes copy each other's contact lists, so cluster mode always reads.
// Thread-safe.
#pragma once

#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

namespace switchboard::messaging {

class WatchedPhones {
 public:
  void add(const std::vector<std::string>& phones) {
    std::lock_guard lock(mutex_);
    for (const std::string& phone : phones) phones_.insert(phone);
  }
  bool mayBeWatched(const std::string& phone) const {
    std::lock_guard lock(mutex_);
    return phones_.contains(phone);
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_set<std::string> phones_;
};

}  // namespace switchboard::messaging
