// The metrics HTTP endpoint: GET /metrics in Prometheus text format.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include <kj/async.h>

namespace switchboard::admin {

// Serves `render()` at GET /metrics over kj-http, on a thread of its own with
// its own KJ event loop (kj::setupAsyncIo), so a scrape never runs on a
// network thread. Other paths get 404, other methods 405.
//
// The constructor binds "HOST:PORT" (port 0: any free port) before it
// returns and throws std::runtime_error with one sentence for a malformed
// endpoint or a failed bind ("cannot serve metrics on 127.0.0.1:9464: ...
// Address already in use"). `render` is called on the server's thread and
// must be thread-safe. The destructor stops the loop (a scrape in progress is
// cancelled) and joins.
class MetricsServer {
 public:
  MetricsServer(std::string_view endpoint, std::function<std::string()> render);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  std::uint16_t port() const { return port_; }
  std::string boundEndpoint() const;

 private:
  void run(std::string host, std::uint16_t port);

  const std::function<std::string()> render_;
  std::string host_;
  std::uint16_t port_ = 0;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;  // set by run() before it reports ready
  std::thread thread_;
};

}  // namespace switchboard::admin
