#include "cluster/watch_thread.h"

#include <spdlog/spdlog.h>

#include "cluster/nats_link.h"

namespace switchboard::cluster {

WatchThread::WatchThread(NatsLink& link, std::string what, DirectoryWatchFn watch)
    : link_(link), what_(std::move(what)), watch_(std::move(watch)), thread_([this] { run(); }) {}

WatchThread::~WatchThread() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void WatchThread::run() {
  auto keepGoing = [this] { return !stopping_ && link_.isConnected(); };
  std::string lastError;
  while (!stopping_) {
    if (link_.isConnected()) {
      try {
        watch_(keepGoing);
        lastError.clear();
      } catch (const std::exception& e) {
        // Said once per distinct failure: a watch retried every 250 ms while
        // its bucket cannot be read would otherwise fill the log.
        if (!stopping_ && lastError != e.what()) {
          spdlog::warn("cluster: watching {}: {}; trying again", what_, e.what());
        }
        lastError = e.what();
      }
    }
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, link_.options().reconnectWait, [this] { return stopping_.load(); });
  }
}

}  // namespace switchboard::cluster
