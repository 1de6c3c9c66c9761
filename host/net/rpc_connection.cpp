#include "net/rpc_connection.h"

#include "net/asio_stream.h"
#include "net/asio_timer.h"
#include "net/endpoint.h"
#include "net/fd_readiness.h"
#include "net/network_thread.h"

#include <kj/compat/tls.h>
#include <kj/debug.h>
#include <unistd.h>

#include <optional>
#include <stdexcept>

namespace switchboard::net {
namespace {

kj::Exception connectFailure(kj::Exception::Type type, const std::exception& error) {
  return kj::Exception(type, __FILE__, __LINE__, kj::str(error.what()));
}

}  // namespace

RpcConnection::RpcConnection(asio::io_context& io, kj::Own<kj::AsyncIoStream> stream)
    : stream_(kj::mv(stream)), timer_(kj::heap<AsioTimer>(io)), client_(*stream_, *timer_) {}

kj::Promise<kj::Own<RpcConnection>> RpcConnection::connect(NetworkThread& thread,
                                                           std::string_view endpointText,
                                                           const ClientTls* tls) {
  Endpoint endpoint;
  int fd = -1;
  std::optional<ClientTls> secure;
  try {
    endpoint = Endpoint::parse(endpointText);
    if (tls != nullptr) {
      secure = *tls;
      if (secure->serverName.empty()) secure->serverName = endpoint.host;
      if (secure->serverName.empty()) {
        throw std::invalid_argument("TLS to " + endpoint.text() + " needs a server name");
      }
    }
    fd = startConnect(endpoint);
  } catch (std::invalid_argument& error) {
    return connectFailure(kj::Exception::Type::FAILED, error);
  } catch (std::exception& error) {
    return connectFailure(kj::Exception::Type::DISCONNECTED, error);
  }
  asio::io_context& io = thread.ioContext();
  // A temporary registration just for the connect; the stream registers the fd again.
  auto pending = kj::heap<asio::posix::stream_descriptor>(io, fd);
  auto connected = whenWritable(*pending);
  return connected.then(
      [&io, endpoint = std::move(endpoint), pending = kj::mv(pending),
       secure = std::move(secure)]() mutable -> kj::Promise<kj::Own<RpcConnection>> {
        int fd = pending->release();
        try {
          finishConnect(fd, endpoint);
        } catch (std::exception& error) {
          ::close(fd);
          return connectFailure(kj::Exception::Type::DISCONNECTED, error);
        }
        auto stream = kj::heap<AsioStream>(io, fd);
        if (!secure) return kj::heap<RpcConnection>(io, kj::mv(stream));
        auto context = secure->context;
        auto handshake = kj::evalNow([&] {
          return context->wrapClient(kj::mv(stream), kj::StringPtr(secure->serverName.c_str()));
        });
        return handshake.then(
            [context, &io](kj::Own<kj::AsyncIoStream> stream) {
              return kj::heap<RpcConnection>(io, kj::mv(stream));
            },
            [where = endpoint.text()](kj::Exception&& e) -> kj::Own<RpcConnection> {
              kj::throwFatalException(kj::Exception(
                  kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                  kj::str("TLS handshake with ", where.c_str(), " failed: ", e.getDescription())));
            });
      });
}

}  // namespace switchboard::net
