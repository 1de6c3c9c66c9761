// One of the directory's watches kept running on a thread of its own, for as
// long as the WatchThread lives (ClusterNode::keepWatching makes them).
//
// `watch(keepGoing)` is a blocking ClusterDirectory watch: it calls back for
// every live key, then for every change, until keepGoing() is false or NATS
// fails. The thread runs it while the link is connected and runs it again each
// time the link comes back; a new run replays every live key, so a change
// made while this node was cut off is seen then. The callbacks run on this
// thread: they must be thread-safe, and they delay the next entry while they
// block. Destruction stops the watch (within its poll interval) and joins.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace switchboard::cluster {

class NatsLink;

using DirectoryWatchFn = std::function<void(const std::function<bool()>& keepGoing)>;

class WatchThread {
 public:
  // `what` names the watch in the log ("sb_sessions").
  WatchThread(NatsLink& link, std::string what, DirectoryWatchFn watch);
  ~WatchThread();
  WatchThread(const WatchThread&) = delete;
  WatchThread& operator=(const WatchThread&) = delete;

 private:
  void run();

  NatsLink& link_;
  const std::string what_;
  const DirectoryWatchFn watch_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::thread thread_;  // last: starts once the rest is made
};

}  // namespace switchboard::cluster
