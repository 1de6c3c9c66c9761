#include "admin/metrics_server.h"

#include <kj/async-io.h>
#include <kj/compat/http.h>

#include <future>
#include <stdexcept>

namespace switchboard::admin {
namespace {

// "HOST:PORT" -> (host, port); throws std::runtime_error naming the problem.
std::pair<std::string, std::uint16_t> splitEndpoint(std::string_view endpoint) {
  auto colon = endpoint.rfind(':');
  std::string text(endpoint);
  if (colon == std::string_view::npos || colon == 0) {
    throw std::runtime_error("--metrics-listen wants HOST:PORT, got '" + text + "'");
  }
  std::string_view port = endpoint.substr(colon + 1);
  bool digits = !port.empty() && port.size() <= 5;
  for (char c : port) digits = digits && c >= '0' && c <= '9';
  if (!digits || std::stoul(std::string(port)) > 65535) {
    throw std::runtime_error("--metrics-listen: bad port '" + std::string(port) + "' in '" + text +
                             "' (expected 0 to 65535)");
  }
  std::string host(endpoint.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return {host, static_cast<std::uint16_t>(std::stoul(std::string(port)))};
}

// KJ describes a failed syscall as "::bind(sockfd, ...): Address already in
// use; toString() = ..."; the operator needs only the reason.
std::string syscallReason(std::string description) {
  auto call = description.find("): ");
  if (description.rfind("::", 0) == 0 && call != std::string::npos) {
    description = description.substr(call + 3);
  }
  auto details = description.find("; ");
  if (details != std::string::npos) description.resize(details);
  return description;
}

// Reports a failure to start; once serving, nothing waits for it any more.
void fail(std::promise<std::uint16_t>& ready, const std::string& reason) {
  try {
    ready.set_exception(std::make_exception_ptr(std::runtime_error(syscallReason(reason))));
  } catch (const std::future_error&) {
  }
}

// Every answer ends its connection ("Connection: close"). A scrape is one
// request every few seconds, so keep-alive saves nothing, and a client that reads
// to EOF (HTTP/1.0, curl, nc, a test) would otherwise wait out the pipeline timeout.
class CloseAfterEachAnswer final : public kj::HttpServerCallbacks {
 public:
  bool shouldClose() override { return true; }
};

class MetricsService final : public kj::HttpService {
 public:
  MetricsService(const kj::HttpHeaderTable& table, const std::function<std::string()>& render)
      : table_(table), render_(render) {}

  kj::Promise<void> request(kj::HttpMethod method, kj::StringPtr url, const kj::HttpHeaders&,
                            kj::AsyncInputStream&, Response& response) override {
    size_t end = url.size();
    KJ_IF_MAYBE (question, url.findFirst('?')) {
      end = *question;
    }
    auto path = kj::heapString(url.slice(0, end));
    return answer(method, path, response);
  }

 private:
  kj::Promise<void> answer(kj::HttpMethod method, kj::StringPtr path, Response& response) {
    kj::HttpHeaders headers(table_);
    headers.set(kj::HttpHeaderId::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    std::string body;
    unsigned status = 200;
    kj::StringPtr statusText = "OK";
    if (path != "/metrics") {
      status = 404;
      statusText = "Not Found";
      body = "not found: metrics are at /metrics\n";
    } else if (method != kj::HttpMethod::GET && method != kj::HttpMethod::HEAD) {
      status = 405;
      statusText = "Method Not Allowed";
      body = "only GET\n";
    } else {
      body = render_();
    }
    auto stream = response.send(status, statusText, headers, static_cast<uint64_t>(body.size()));
    if (method == kj::HttpMethod::HEAD) return kj::READY_NOW;
    auto owned = std::make_unique<std::string>(std::move(body));
    auto write = stream->write(owned->data(), owned->size());
    return write.attach(kj::mv(stream), kj::mv(owned));
  }

  const kj::HttpHeaderTable& table_;
  const std::function<std::string()>& render_;
};

}  // namespace

MetricsServer::MetricsServer(std::string_view endpoint, std::function<std::string()> render)
    : render_(std::move(render)) {
  auto [host, port] = splitEndpoint(endpoint);
  host_ = host;
  // Shared: the thread may outlive this constructor's frame.
  auto ready = std::make_shared<std::promise<std::uint16_t>>();
  auto bound = ready->get_future();
  thread_ = std::thread([this, host = host, port = port, ready] {
    try {
      auto io = kj::setupAsyncIo();
      auto address = io.provider->getNetwork()
                         .parseAddress(kj::StringPtr(host.c_str()), port)
                         .wait(io.waitScope);
      auto receiver = address->listen();
      auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
      stop_ = kj::mv(stop.fulfiller);
      kj::HttpHeaderTable table;
      MetricsService service(table, render_);
      CloseAfterEachAnswer closeAfterEachAnswer;
      kj::HttpServerSettings settings;
      settings.callbacks = closeAfterEachAnswer;
      settings.pipelineTimeout = 0 * kj::SECONDS;  // kj 0.9.2 still waits for it after "close"
      kj::HttpServer server(io.provider->getTimer(), table, service, settings);
      auto listening = server.listenHttp(*receiver);
      ready->set_value(static_cast<std::uint16_t>(receiver->getPort()));
      listening.exclusiveJoin(kj::mv(stop.promise)).wait(io.waitScope);
    } catch (const kj::Exception& e) {
      fail(*ready, e.getDescription().cStr());
    } catch (const std::exception& e) {
      fail(*ready, e.what());
    }
  });
  try {
    port_ = bound.get();
  } catch (const std::exception& e) {
    thread_.join();
    throw std::runtime_error("cannot serve metrics on " + std::string(endpoint) + ": " + e.what());
  }
}

MetricsServer::~MetricsServer() {
  if (stop_.get() != nullptr) stop_->fulfill();
  thread_.join();
}

std::string MetricsServer::boundEndpoint() const {
  bool v6 = host_.find(':') != std::string::npos;
  return (v6 ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_);
}

}  // namespace switchboard::admin
