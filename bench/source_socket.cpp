#include "source_socket.h"

#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "receive_stamp.h"

namespace switchboard::bench {

std::uint32_t sourceHostOf(int workerIndex, std::uint32_t n) {
  return 0x7f000002u + static_cast<std::uint32_t>(workerIndex) * 4000 + n % 4000;
}

int connectFromSource(const sockaddr_in& server, std::uint32_t sourceHost, std::string& error) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("socket() failed: ") + strerror(errno);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // Arrivals are timed by the kernel (receive_stamp.h); a refusal shows as arrivals without.
  enableReceiveStamps(fd);
  sockaddr_in source{};
  source.sin_family = AF_INET;
  source.sin_addr.s_addr = htonl(sourceHost);
  const char* failed = nullptr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&source), sizeof(source)) != 0) {
    failed = "bind() failed: ";
  } else if (::connect(fd, reinterpret_cast<const sockaddr*>(&server), sizeof(server)) != 0 &&
             errno != EINPROGRESS) {
    failed = "connect() failed: ";
  }
  if (failed != nullptr) {
    error = std::string(failed) + strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace switchboard::bench
