// The generators' TCP connections: from a chosen loopback source address, non-blocking.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>

namespace switchboard::bench {

// The source address (host order) of a worker's n-th connection: 127.0.0.2 and up, a block
// of 4,000 per worker, so each source address has its own ephemeral port range towards the
// server and a run can hold more connections than one address's ports.
std::uint32_t sourceHostOf(int workerIndex, std::uint32_t n);

// A non-blocking TCP socket (TCP_NODELAY, kernel receive timestamps on: receive_stamp.h)
// bound to `sourceHost` (host order, the port left to connect: IP_BIND_ADDRESS_NO_PORT) and
// connecting to `server`: the connect may still be in progress when it returns (a first
// write then finds EAGAIN, or fails if it was refused). Returns the descriptor, which the
// caller owns, or -1 with `error` saying which call failed.
int connectFromSource(const sockaddr_in& server, std::uint32_t sourceHost, std::string& error);

}  // namespace switchboard::bench
