#include "net/rpc_connection.h"

#include "net/asio_stream.h"
#include "net/endpoint.h"
#include "net/fd_readiness.h"
#include "net/network_thread.h"

#include <kj/debug.h>
#include <unistd.h>

#include <stdexcept>

namespace switchboard::net {
namespace {

kj::Exception connectFailure(kj::Exception::Type type, const std::exception& error) {
  return kj::Exception(type, __FILE__, __LINE__, kj::str(error.what()));
}

}  // namespace

RpcConnection::RpcConnection(kj::Own<kj::AsyncIoStream> stream)
    : stream_(kj::mv(stream)), client_(*stream_) {}

kj::Promise<kj::Own<RpcConnection>> RpcConnection::connect(NetworkThread& thread,
                                                           std::string_view endpointText) {
  Endpoint endpoint;
  int fd = -1;
  try {
    endpoint = Endpoint::parse(endpointText);
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
      [&io, endpoint = std::move(endpoint),
       pending = kj::mv(pending)]() mutable -> kj::Promise<kj::Own<RpcConnection>> {
        int fd = pending->release();
        try {
          finishConnect(fd, endpoint);
        } catch (std::exception& error) {
          ::close(fd);
          return connectFailure(kj::Exception::Type::DISCONNECTED, error);
        }
        return kj::heap<RpcConnection>(kj::heap<AsioStream>(io, fd));
      });
}

}  // namespace switchboard::net
