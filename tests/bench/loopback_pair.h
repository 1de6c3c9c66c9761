// A connected TCP pair on 127.0.0.1 for the generator's socket tests: blocking descriptors,
// closed on destruction. Construction fails the calling test (gtest ADD_FAILURE) when a
// call fails; the descriptors are then -1.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <poll.h>

#include "receive_stamp.h"

namespace switchboard::bench {

struct LoopbackPair {
  int client = -1;  // the connecting side (a phone's socket)
  int server = -1;  // the accepted side (the server's end)

  LoopbackPair() {
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listener, 1) != 0 ||
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      ADD_FAILURE() << "listening on 127.0.0.1 failed";
      if (listener >= 0) ::close(listener);
      return;
    }
    client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (client < 0 ||
        ::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      ADD_FAILURE() << "connecting to 127.0.0.1 failed";
    } else {
      server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (server < 0) ADD_FAILURE() << "accept failed";
    }
    ::close(listener);
    int one = 1;
    if (server >= 0) ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  ~LoopbackPair() {
    if (client >= 0) ::close(client);
    if (server >= 0) ::close(server);
  }
  LoopbackPair(const LoopbackPair&) = delete;
  LoopbackPair& operator=(const LoopbackPair&) = delete;
};

// Linux turns receive timestamping on for the whole machine when the first socket asks for
// it, through deferred work (net_enable_timestamp), and off again after the last such socket
// closed: a segment arriving in between carries no stamp. A test that checks stamps calls
// this first: it keeps one stamped connection open for the rest of the program and returns
// once a probe byte comes back stamped (false if none did in 10,000 tries).
inline bool holdReceiveStampsOn() {
  static LoopbackPair* holder = nullptr;
  static bool on = false;
  if (holder != nullptr) return on;
  holder = new LoopbackPair;
  if (holder->client < 0 || holder->server < 0 || !enableReceiveStamps(holder->client)) {
    return false;
  }
  for (int probe = 0; probe < 10000 && !on; ++probe) {
    char byte = 'x';
    if (::send(holder->server, &byte, 1, MSG_NOSIGNAL) != 1) return false;
    ArrivalStamp stamp;
    if (receiveStamped(holder->client, &byte, 1, 0, stamp) != 1) return false;
    on = stamp.kernelNs != 0;
    if (!on) ::poll(nullptr, 0, 1);  // let the deferred work run
  }
  return on;
}

}  // namespace switchboard::bench
