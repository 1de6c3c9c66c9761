#pragma once
// A real HTTP server for the webhook tests: kj::HttpServer on 127.0.0.1, ephemeral port,
// on a thread of its own. It records every request and answers with a scripted status.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace kj {
template <typename T>
class CrossThreadPromiseFulfiller;
}

namespace switchboard::notify::testing {

struct ReceivedRequest {
  std::string method;
  std::string url;
  std::string contentType;
  std::string body;
};

// Owns its thread and KJ loop; the destructor stops the server and joins. `statuses` are
// the answers to the first requests in order; every later request gets 200.
class HttpReceiver {
 public:
  explicit HttpReceiver(std::vector<unsigned> statuses = {});
  ~HttpReceiver();

  std::uint16_t port() const { return port_; }
  std::string url(const std::string& path = "/push") const;
  std::vector<ReceivedRequest> received() const;
  std::size_t connections() const;

 private:
  void run();
  unsigned nextStatus();  // called on the server thread
  void record(ReceivedRequest request);

  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<unsigned> statuses_;
  std::vector<ReceivedRequest> received_;
  std::size_t connections_ = 0;
  std::uint16_t port_ = 0;
  bool listening_ = false;
  const kj::CrossThreadPromiseFulfiller<void>* stop_ = nullptr;  // owned by run()'s frame
  std::thread thread_;
};

// A port on 127.0.0.1 that nothing listens on (bound, then closed).
std::uint16_t closedPort();

}  // namespace switchboard::notify::testing
