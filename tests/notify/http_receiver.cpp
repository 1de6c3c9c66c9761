#include "http_receiver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <kj/async-io.h>
#include <kj/compat/http.h>

#include <functional>

namespace switchboard::notify::testing {

namespace {

class RecordingService final : public kj::HttpService {
 public:
  RecordingService(const kj::HttpHeaderTable& table, std::function<unsigned()> nextStatus,
                   std::function<void(ReceivedRequest)> record)
      : table_(table), nextStatus_(std::move(nextStatus)), record_(std::move(record)) {}

  kj::Promise<void> request(kj::HttpMethod method, kj::StringPtr url,
                            const kj::HttpHeaders& headers, kj::AsyncInputStream& requestBody,
                            Response& response) override {
    // url and headers die at the first read of the body: copy them first.
    ReceivedRequest request;
    request.method = kj::str(method).cStr();
    request.url = url.cStr();
    KJ_IF_MAYBE (type, headers.get(kj::HttpHeaderId::CONTENT_TYPE)) {
      request.contentType = type->cStr();
    }
    return requestBody.readAllText().then(
        [this, request = std::move(request), &response](kj::String body) mutable {
          request.body = body.cStr();
          record_(std::move(request));
          unsigned status = nextStatus_();
          kj::HttpHeaders answerHeaders(table_);
          auto stream = response.send(status, status < 400 ? "OK" : "Error", answerHeaders, 2);
          auto written = stream->write("ok", 2);
          return written.attach(kj::mv(stream));
        });
  }

 private:
  const kj::HttpHeaderTable& table_;
  std::function<unsigned()> nextStatus_;
  std::function<void(ReceivedRequest)> record_;
};

}  // namespace

HttpReceiver::HttpReceiver(std::vector<unsigned> statuses)
    : statuses_(statuses.begin(), statuses.end()) {
  thread_ = std::thread([this] { run(); });
  std::unique_lock lock(mutex_);
  ready_.wait(lock, [this] { return listening_; });
}

HttpReceiver::~HttpReceiver() {
  {
    std::lock_guard lock(mutex_);
    if (stop_ != nullptr) stop_->fulfill();
  }
  thread_.join();
}

std::string HttpReceiver::url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + path;
}

std::vector<ReceivedRequest> HttpReceiver::received() const {
  std::lock_guard lock(mutex_);
  return received_;
}

std::size_t HttpReceiver::connections() const {
  std::lock_guard lock(mutex_);
  return connections_;
}

unsigned HttpReceiver::nextStatus() {
  std::lock_guard lock(mutex_);
  if (statuses_.empty()) return 200;
  unsigned status = statuses_.front();
  statuses_.pop_front();
  return status;
}

void HttpReceiver::record(ReceivedRequest request) {
  std::lock_guard lock(mutex_);
  received_.push_back(std::move(request));
}

void HttpReceiver::run() {
  auto io = kj::setupAsyncIo();
  kj::HttpHeaderTable table;
  RecordingService service(
      table, [this] { return nextStatus(); }, [this](ReceivedRequest r) { record(std::move(r)); });
  kj::HttpServer server(io.provider->getTimer(), table, [&](kj::AsyncIoStream&) {
    {
      std::lock_guard lock(mutex_);
      ++connections_;
    }
    return kj::Own<kj::HttpService>(&service, kj::NullDisposer::instance);
  });
  auto address = io.provider->getNetwork().parseAddress("127.0.0.1", 0).wait(io.waitScope);
  auto listener = address->listen();
  auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
  {
    std::lock_guard lock(mutex_);
    port_ = static_cast<std::uint16_t>(listener->getPort());
    stop_ = stop.fulfiller.get();
    listening_ = true;
  }
  ready_.notify_all();
  server.listenHttp(*listener).exclusiveJoin(kj::mv(stop.promise)).wait(io.waitScope);
  std::lock_guard lock(mutex_);
  stop_ = nullptr;
}

std::uint16_t closedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

}  // namespace switchboard::notify::testing
