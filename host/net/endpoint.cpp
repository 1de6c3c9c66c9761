#include "net/endpoint.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace switchboard::net {
namespace {

constexpr std::string_view kUnixPrefix = "unix:";

std::runtime_error socketError(std::string_view verb, const Endpoint& endpoint, int error) {
  return std::runtime_error(std::string(verb) + " " + endpoint.text() + ": " +
                            std::strerror(error));
}

sockaddr_un unixAddress(const Endpoint& endpoint) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (endpoint.path.size() >= sizeof(address.sun_path)) {
    throw std::runtime_error("socket path too long: " + endpoint.path);
  }
  std::memcpy(address.sun_path, endpoint.path.data(), endpoint.path.size());
  return address;
}

// One resolved TCP address; names are resolved synchronously (listen time, or a connect
// from a loop thread to a name in /etc/hosts or a literal address).
struct ResolvedAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  int family = AF_INET;
};

ResolvedAddress resolve(const Endpoint& endpoint, bool passive, std::string_view verb) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  std::string service = std::to_string(endpoint.port);
  addrinfo* results = nullptr;
  int rc = ::getaddrinfo(endpoint.host.empty() ? nullptr : endpoint.host.c_str(), service.c_str(),
                         &hints, &results);
  if (rc != 0 || results == nullptr) {
    throw std::runtime_error(std::string(verb) + " " + endpoint.text() + ": " + ::gai_strerror(rc));
  }
  ResolvedAddress resolved;
  std::memcpy(&resolved.storage, results->ai_addr, results->ai_addrlen);
  resolved.length = results->ai_addrlen;
  resolved.family = results->ai_family;
  ::freeaddrinfo(results);
  return resolved;
}

int newSocket(int family, std::string_view verb, const Endpoint& endpoint) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw socketError(verb, endpoint, errno);
  return fd;
}

// A socket file that refuses connections is left over from a process that died.
void removeStaleUnixSocket(const Endpoint& endpoint) {
  struct stat info {};
  if (::lstat(endpoint.path.c_str(), &info) != 0 || !S_ISSOCK(info.st_mode)) return;
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return;
  sockaddr_un address = unixAddress(endpoint);
  int rc = ::connect(probe, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  int error = errno;
  ::close(probe);
  if (rc != 0 && error == ECONNREFUSED) ::unlink(endpoint.path.c_str());
}

}  // namespace

Endpoint Endpoint::parse(std::string_view text) {
  Endpoint endpoint;
  if (text.starts_with(kUnixPrefix) || text.find('/') != std::string_view::npos) {
    endpoint.kind = Kind::kUnix;
    endpoint.path =
        std::string(text.starts_with(kUnixPrefix) ? text.substr(kUnixPrefix.size()) : text);
    if (endpoint.path.empty()) throw std::invalid_argument("empty socket path");
    return endpoint;
  }
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    throw std::invalid_argument("endpoint must be HOST:PORT or a socket path: " +
                                std::string(text));
  }
  std::string_view host = text.substr(0, colon);
  std::string_view port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned long value = 0;
  bool digits = !port.empty() && port.size() <= 5;
  for (char c : port) {
    if (c < '0' || c > '9') digits = false;
  }
  if (digits) value = std::stoul(std::string(port));
  if (!digits || value > 65535) {
    throw std::invalid_argument("bad port in endpoint: " + std::string(text));
  }
  endpoint.host = std::string(host);
  endpoint.port = static_cast<uint16_t>(value);
  return endpoint;
}

std::string Endpoint::text() const {
  if (kind == Kind::kUnix) return path;
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

int openListeningSocket(const Endpoint& endpoint, bool reusePort) {
  constexpr std::string_view verb = "cannot listen on";
  int fd = -1;
  int rc = 0;
  if (endpoint.kind == Endpoint::Kind::kUnix) {
    sockaddr_un address = unixAddress(endpoint);
    removeStaleUnixSocket(endpoint);
    fd = newSocket(AF_UNIX, verb, endpoint);
    rc = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  } else {
    ResolvedAddress address = resolve(endpoint, /*passive=*/true, verb);
    fd = newSocket(address.family, verb, endpoint);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reusePort) ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    rc = ::bind(fd, reinterpret_cast<sockaddr*>(&address.storage), address.length);
  }
  if (rc == 0) rc = ::listen(fd, SOMAXCONN);
  if (rc != 0) {
    int error = errno;
    ::close(fd);
    throw socketError(verb, endpoint, error);
  }
  return fd;
}

int startConnect(const Endpoint& endpoint) {
  constexpr std::string_view verb = "cannot connect to";
  int fd = -1;
  int rc = 0;
  if (endpoint.kind == Endpoint::Kind::kUnix) {
    sockaddr_un address = unixAddress(endpoint);
    fd = newSocket(AF_UNIX, verb, endpoint);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  } else {
    ResolvedAddress address = resolve(endpoint, /*passive=*/false, verb);
    fd = newSocket(address.family, verb, endpoint);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&address.storage), address.length);
  }
  if (rc != 0 && errno != EINPROGRESS && errno != EAGAIN) {
    int error = errno;
    ::close(fd);
    throw socketError(verb, endpoint, error);
  }
  return fd;
}

void finishConnect(int fd, const Endpoint& endpoint) {
  int error = 0;
  socklen_t length = sizeof(error);
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
  if (error != 0) throw socketError("cannot connect to", endpoint, error);
}

uint16_t localPort(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof(storage);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) return 0;
  if (storage.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<sockaddr_in*>(&storage)->sin_port);
  }
  if (storage.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port);
  }
  return 0;
}

namespace {

// Appends `value` in decimal at `out`; returns the end.
char* appendDecimal(char* out, unsigned value) {
  char digits[10];
  int count = 0;
  do {
    digits[count++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  while (count > 0) *out++ = digits[--count];
  return out;
}

}  // namespace

std::string describeAddress(const sockaddr_storage& storage) {
  char text[INET6_ADDRSTRLEN] = {};
  if (storage.ss_family == AF_INET) {
    // Formatted here, once per accepted connection: glibc's inet_ntop formats IPv4 with
    // sprintf, about 1,700 instructions (a fifth of accepting a connection).
    auto* in = reinterpret_cast<const sockaddr_in*>(&storage);
    auto* bytes = reinterpret_cast<const unsigned char*>(&in->sin_addr);
    char* end = text;
    for (int i = 0; i < 4; ++i) {
      if (i > 0) *end++ = '.';
      end = appendDecimal(end, bytes[i]);
    }
    *end++ = ':';
    end = appendDecimal(end, ntohs(in->sin_port));
    return std::string(text, end);
  }
  if (storage.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
    return "[" + std::string(text) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "unix";
}

}  // namespace switchboard::net
