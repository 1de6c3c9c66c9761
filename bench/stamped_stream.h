// The phones' socket stream in sbbench: clock reads taken at the socket, not in the RPC layer.
#pragma once

#include <kj/async-io.h>

#include <cstdint>
#include <functional>

#include "net/asio_stream.h"

namespace switchboard::bench {

// A kj::AsyncIoStream over the host's net::AsioStream (which it owns) that tells the load
// generator when bytes really crossed the socket, so the generator's own costs (Cap'n Proto
// encoding and dispatch, write batching, timer hops) are not counted as server latency.
//
// Reads: lastReadNs() is the clock read just after the most recent read() syscall that
// returned data, i.e. when the bytes of the message now being dispatched were read (a read
// served from AsioStream's buffer keeps the stamp of the syscall that filled it).
//
// Writes: beforeWrite(ns) is called with the clock read just before the bytes of a write are
// handed on. With directWrites, a write made while nothing is queued goes to the kernel at
// once (one sendmsg), so that clock read is the send time; what the kernel does not take,
// and every write while something is queued, goes through AsioStream's batching (order is
// kept). Without directWrites every write is batched (closed loops, where a syscall per
// message would make the generator the bottleneck) and the stamp is the hand-off to the batch.
//
// Single-threaded: created, used and destroyed on the loop thread of the AsioStream.
class StampedStream final : public kj::AsyncIoStream {
 public:
  StampedStream(kj::Own<net::AsioStream> inner, bool directWrites);

  std::int64_t lastReadNs() const { return lastReadNs_; }
  std::function<void(std::int64_t ns)> beforeWrite;

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }
  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, kj::uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, kj::uint* length) override {
    inner_->getsockname(addr, length);
  }
  void getpeername(struct sockaddr* addr, kj::uint* length) override {
    inner_->getpeername(addr, length);
  }
  kj::Maybe<int> getFd() const override { return inner_->getFd(); }

 private:
  kj::Own<net::AsioStream> inner_;
  int fd_;
  bool directWrites_;
  std::int64_t lastReadNs_ = 0;
};

}  // namespace switchboard::bench
