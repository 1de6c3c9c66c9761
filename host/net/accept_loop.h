#pragma once
// Accepting on a listening socket, shared by the phone listener and the web endpoint.

#include <kj/async.h>
#include <asio/posix/stream_descriptor.hpp>

#include <chrono>
#include <functional>
#include <string>

namespace switchboard::net {

// How long accepting pauses after a failure that would otherwise spin.
inline constexpr std::chrono::milliseconds kAcceptBackoff{100};

// Accepts on `acceptor` until the promise is dropped. Each time it is readable, takes up to
// 64 connections (non-blocking, close-on-exec) and hands each descriptor to `serve`, which
// owns it from then on, with the peer's address as describeAddress() gives it (from accept4
// itself: no getpeername() per connection). A connection that fails on its own (EINTR,
// ECONNABORTED, EPROTO) is skipped. Any other failure (EMFILE, ENFILE, ENOBUFS, ...) leaves the
// acceptor readable, so retrying at once would spin: it goes to `failed(errno)` and accepting
// pauses kAcceptBackoff. Create and drop the promise on the thread running the acceptor's
// io_context.
kj::Promise<void> acceptConnections(asio::posix::stream_descriptor& acceptor,
                                    std::function<void(int fd, std::string peer)> serve,
                                    std::function<void(int error)> failed);

}  // namespace switchboard::net
