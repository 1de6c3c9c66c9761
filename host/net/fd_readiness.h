#pragma once
// KJ promises for "this descriptor is readable/writable", built on Asio's reactor.

#include <kj/async.h>
#include <asio/posix/stream_descriptor.hpp>

namespace switchboard::net {

// Resolves when `descriptor` is readable (or writable), including error and hang-up states,
// which the following non-blocking syscall then reports.
//
// Cancellation: dropping the promise detaches it from the pending Asio wait; the Asio handler
// later runs (or is destroyed) without touching anything but a small shared slot, so the
// descriptor may be closed and the caller's buffers freed at any time after the drop.
// The promise must be created and consumed on the thread running the descriptor's io_context.
kj::Promise<void> whenReadable(asio::posix::stream_descriptor& descriptor);
kj::Promise<void> whenWritable(asio::posix::stream_descriptor& descriptor);

}  // namespace switchboard::net
