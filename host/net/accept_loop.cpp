#include "net/accept_loop.h"

#include <sys/socket.h>

#include <cerrno>

#include "net/asio_timer.h"
#include "net/endpoint.h"
#include "net/fd_readiness.h"

namespace switchboard::net {
namespace {

// One acceptor's loop; lives as long as the promise that runs it.
struct AcceptLoop {
  AcceptLoop(asio::posix::stream_descriptor& acceptor,
             std::function<void(int fd, std::string peer)> serve,
             std::function<void(int error)> failed)
      : acceptor(acceptor),
        serve(std::move(serve)),
        failed(std::move(failed)),
        timer(static_cast<asio::io_context&>(acceptor.get_executor().context())) {}

  asio::posix::stream_descriptor& acceptor;
  std::function<void(int fd, std::string peer)> serve;
  std::function<void(int error)> failed;
  AsioTimer timer;

  kj::Promise<void> next() {
    return whenReadable(acceptor).then([this]() -> kj::Promise<void> {
      // A bounded batch per wake-up keeps one busy listener from starving the loop.
      for (int i = 0; i < 64; ++i) {
        sockaddr_storage peer{};
        socklen_t length = sizeof(peer);
        int fd = ::accept4(acceptor.native_handle(), reinterpret_cast<sockaddr*>(&peer), &length,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
          serve(fd, describeAddress(peer));
          continue;
        }
        int error = errno;
        if (error == EINTR || error == ECONNABORTED || error == EPROTO) continue;
        if (error == EAGAIN || error == EWOULDBLOCK) break;
        failed(error);
        auto pause = std::chrono::duration_cast<std::chrono::nanoseconds>(kAcceptBackoff);
        return timer.afterDelay(pause.count() * kj::NANOSECONDS).then([this] { return next(); });
      }
      return next();
    });
  }
};

}  // namespace

kj::Promise<void> acceptConnections(asio::posix::stream_descriptor& acceptor,
                                    std::function<void(int fd, std::string peer)> serve,
                                    std::function<void(int error)> failed) {
  auto loop = kj::heap<AcceptLoop>(acceptor, std::move(serve), std::move(failed));
  auto running = loop->next();
  return running.attach(kj::mv(loop));
}

}  // namespace switchboard::net
