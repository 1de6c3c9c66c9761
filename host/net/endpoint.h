#pragma once
// Endpoint text ("HOST:PORT" or a Unix socket path) and the raw socket calls behind it.

#include <sys/socket.h>
#include <cstdint>

#include <string>
#include <string_view>

namespace switchboard::net {

// Where a listener binds or a client connects.
// Text forms: "HOST:PORT" for TCP (HOST is a name, an IPv4 address, "[v6addr]" or empty for
// every interface; PORT 0 = ephemeral when listening), and a Unix-domain stream socket path
// for anything containing '/' or prefixed "unix:".
struct Endpoint {
  enum class Kind { kTcp, kUnix };

  Kind kind = Kind::kTcp;
  std::string host;   // TCP only
  uint16_t port = 0;  // TCP only
  std::string path;   // Unix only

  // Throws std::invalid_argument with a one-line message on malformed text.
  static Endpoint parse(std::string_view text);
  std::string text() const;
};

// The calls below return owned, non-blocking, close-on-exec descriptors; the caller closes.

// Binds and listens. Throws std::runtime_error("cannot listen on EP: REASON"). For TCP,
// reusePort sets SO_REUSEPORT so several threads can each own an acceptor on one port. For
// Unix, a stale socket file nobody answers on is removed first.
int openListeningSocket(const Endpoint& endpoint, bool reusePort);

// Starts a non-blocking connect; completion is signalled by writability, then
// finishConnect() reports the outcome. Throws std::runtime_error("cannot connect to EP: ...").
int startConnect(const Endpoint& endpoint);
void finishConnect(int fd, const Endpoint& endpoint);

uint16_t localPort(int fd);  // 0 for non-IP sockets
// An address as accept4() or getpeername() fill it in, as text: "1.2.3.4:5678", "[::1]:5678"
// or "unix".
std::string describeAddress(const sockaddr_storage& address);

}  // namespace switchboard::net
