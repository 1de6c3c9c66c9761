#pragma once
// The client side of a two-party Cap'n Proto RPC connection.

#include "net/client_vat_network.h"

#include <kj/async-io.h>
#include <kj/timer.h>

#include <memory>
#include <string>
#include <string_view>

namespace asio {
class io_context;
}
namespace kj {
class TlsContext;
}

namespace switchboard::net {

class NetworkThread;

// TLS for a client connection: the context that decides whom to trust (tls_context.h) and the
// name the server's certificate must carry (empty: the endpoint's host, as written in it).
struct ClientTls {
  std::shared_ptr<kj::TlsContext> context;
  std::string serverName;
};

// An open RPC connection to a server: the stream and the RPC client over it, a
// TwoPartyRpcClient (client_vat_network.h): capnp::TwoPartyClient's bytes on the wire, read
// and written as the host's connections are. Without TLS the stream is an AsioStream, so a
// message already read is handed to the RPC system at once, an idle connection's next message
// is taken at the socket's readability edge, and a write below the stream's high-water mark is
// copied into it at once; with TLS each message goes through the TLS stream's promises. A
// Finish waits for the connection's next message (or a flush within FinishFlush::kDelay), so
// a call answered costs the server one read, not two. What the server sends is held to
// kClientConnectionLimits (connection_limits.h).
//
// Made by connect() on a NetworkThread's loop thread, and used and destroyed there.
// Destroying it closes the socket; outstanding calls and capabilities obtained through it
// then fail with DISCONNECTED. When the server goes away, or sends what breaks the limits,
// onDisconnect() resolves and calls fail with DISCONNECTED (with the limit's reason, as
// ClientVatNetwork says); nothing crashes.
class RpcConnection {
 public:
  // Connects to "HOST:PORT" or a Unix socket path. Call on `thread`'s loop thread. A failure
  // ("cannot connect to 127.0.0.1:1: Connection refused", a bad endpoint) rejects the
  // promise with a DISCONNECTED (unreachable) or FAILED (malformed) kj::Exception.
  // Dropping the promise cancels the attempt and closes the socket.
  //
  // With `tls`, the connection completes a TLS handshake (and checks the server's
  // certificate) before any RPC; a failure rejects with DISCONNECTED "TLS handshake with
  // 127.0.0.1:5222 failed: " and kj-tls's reason: "TLS peer's certificate is not trusted;
  // reason = unable to get local issuer certificate" (or "= hostname mismatch"), "SSL unable
  // to continue I/O" from a server that does not speak TLS. `tls` is copied.
  static kj::Promise<kj::Own<RpcConnection>> connect(NetworkThread& thread,
                                                     std::string_view endpoint,
                                                     const ClientTls* tls = nullptr);

  // Over `stream`, a connected stream whose KJ loop runs on `io` (the flush of held Finishes
  // is timed there).
  RpcConnection(asio::io_context& io, kj::Own<kj::AsyncIoStream> stream);
  RpcConnection(const RpcConnection&) = delete;
  RpcConnection& operator=(const RpcConnection&) = delete;

  capnp::Capability::Client bootstrap() { return client_.bootstrap(); }
  template <class Interface>
  typename Interface::Client bootstrapAs() {
    return client_.bootstrap().castAs<Interface>();
  }
  kj::Promise<void> onDisconnect() { return client_.onDisconnect(); }
  kj::AsyncIoStream& stream() { return *stream_; }

 private:
  kj::Own<kj::AsyncIoStream> stream_;  // declared first: the client uses it until destroyed
  kj::Own<kj::Timer> timer_;           // an AsioTimer on the stream's loop
  TwoPartyRpcClient client_;
};

}  // namespace switchboard::net
