// The phones' socket stream in sbbench: clock reads taken at the socket, not in the RPC layer.
#pragma once

#include <kj/async-io.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "net/asio_stream.h"
#include "net/immediate_io_stream.h"
#include "net/socket_registration.h"
#include "receive_stamp.h"

namespace switchboard::bench {

// A net::ImmediateIoStream over the host's net::AsioStream (which it owns) that tells the load
// generator when bytes really crossed the socket, so the generator's own costs (Cap'n Proto
// encoding and dispatch, write batching, timer hops) are not counted as server latency.
//
// Reads are made here, not in AsioStream: recvmsg() with the kernel's receive timestamp
// (receiveStamped()), which AsioStream's reads do not ask for. lastArrival() holds the
// stamps of the most recent recvmsg() that returned data (a read served from this stream's
// read-ahead keeps the stamps of the syscall that filled it): the kernel's stamp, at or
// after the arrival of every byte that read returned, and the clock read just after it. For
// the message a call on the phone is dispatched for, that may be a later read: capnp's
// RpcSystem dispatches a call to a local capability one event later (LocalClient::call's
// evalLater), after its message loop already asked for the next message, and that read may
// have gone to the socket. So with countCapnpMessages() (the stream carries the RPC's
// frames themselves, not TLS or WebSocket) the stream follows the frames (segment table,
// segments) as it hands bytes out, and messageArrival() holds the stamps of the read that
// handed out the last byte of the last whole message: at dispatch, that of the message
// dispatched (or, should a dispatch lag further, of a later one: an upper bound either
// way). The wait for readability uses a SocketRegistration of its own on a dup() of the
// descriptor (the same socket in the same epoll set under a second descriptor), with
// AsioStream's contract: a read that the TCP_INQ hint says emptied the socket, or that
// found EAGAIN, waits for the next edge. Small reads go through a per-thread 64 KiB buffer
// and only the bytes read past a request are kept.
//
// Writes: beforeWrite(ns) is called with the clock read just before the bytes of a write are
// handed on. With directWrites, a write made while nothing is queued goes to the kernel at
// once (one sendmsg), so that clock read is the send time; what the kernel does not take goes
// through AsioStream's batching (order is kept), and so does every write while something is
// queued, or too large for the batch to be sure to take the rest at once (its high-water
// mark). Without directWrites every write is batched (closed loops, where a syscall per
// message would make the generator the bottleneck) and the stamp is the hand-off to the batch.
//
// As a net::ImmediateIoStream (immediate_io_stream.h), so the client library's connection
// (net::TwoPartyRpcClient) reads and writes it as it does a plain AsioStream: readAheadNow()
// is one stamped recvmsg() as tryRead() makes it, the bytes taken are followed as frames as
// tryRead()'s are, and tryWriteNow() writes as write() does (the stamp taken first, handed to
// beforeWrite once the bytes are taken), when the AsioStream can take what the kernel does not.
//
// Single-threaded: created, used and destroyed on the loop thread of the AsioStream.
class StampedStream final : public net::ImmediateIoStream {
 public:
  StampedStream(asio::io_context& io, kj::Own<net::AsioStream> inner, bool directWrites);

  const ArrivalStamp& lastArrival() const { return lastArrival_; }
  // Follow the bytes as Cap'n Proto frames from here on (the stream's first byte, before any
  // read), so that messageArrival() is per message.
  void countCapnpMessages() { counting_ = true; }
  // The stamps of the read that completed the last whole message (countCapnpMessages()),
  // else lastArrival().
  const ArrivalStamp& messageArrival() const { return counting_ ? messageArrival_ : lastArrival_; }
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

  // net::ImmediateIoStream.
  size_t bufferedReadBytes() const override { return readEnd_ - readStart_; }
  size_t takeBuffered(void* out, size_t maxBytes) override;
  kj::ArrayPtr<const kj::byte> peekBuffered() const override {
    return kj::arrayPtr(readAhead_.get() + readStart_, readEnd_ - readStart_);
  }
  bool readAheadNow() override;
  kj::Maybe<kj::Promise<void>> whenNothingToRead() override;
  bool listenReadable(net::SocketRegistration::ReadListener& listener) override;
  void stopListening(net::SocketRegistration::ReadListener& listener) override {
    reader_.stopListening(listener);
  }
  bool tryWriteNow(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;

 private:
  kj::Promise<size_t> readLoop(kj::byte* out, size_t minBytes, size_t maxBytes, size_t done);
  // One recvmsg() with its stamps (lastArrival()), keeping reader_ told: the bytes read (> 0),
  // 0 at the end of the stream, -EAGAIN when nothing is there now, else -errno.
  ssize_t receiveOnce(kj::byte* into, size_t size);
  void keepReadAhead(const kj::byte* data, size_t size);
  // Bytes are buffered, an end or failure was met, or the socket may be readable: a reader
  // reads at once rather than waiting for the next readability edge.
  bool readsAtOnce() const;
  // The pieces to the kernel at once, what it does not take to the AsioStream's batch (false,
  // nothing sent, when that may not take them without waiting).
  bool sendDirect(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces);
  // Follows `size` bytes just handed out through the frames (countCapnpMessages()).
  void countFrames(const kj::byte* bytes, size_t size);

  kj::Own<net::AsioStream> inner_;
  int fd_;
  net::SocketRegistration reader_;  // owns a dup() of fd_: readiness for reads
  bool directWrites_;
  ArrivalStamp lastArrival_;
  // Frame following (countCapnpMessages()): where in a frame the next byte handed out is.
  bool counting_ = false;
  ArrivalStamp messageArrival_;
  std::uint32_t word_ = 0;          // the 32-bit number being read, little-endian
  std::uint32_t wordBytes_ = 0;     // how many of its bytes came
  std::uint32_t segmentsLeft_ = 0;  // sizes still to read in the segment table; 0: the count
  bool inTable_ = false;            // reading the segment table (count, then sizes)
  std::uint64_t rest_ = 0;          // the table's padding and segments, summed while reading it
  std::uint64_t skip_ = 0;          // bytes of padding and segments left in the message
  // Bytes read past a request, until taken (null when none).
  std::unique_ptr<kj::byte[]> readAhead_;
  size_t readStart_ = 0, readEnd_ = 0;
  // What readAheadNow() met instead of bytes, for the next tryRead(): -1 nothing, 0 the end of
  // the stream, else the read's errno.
  int readAheadEnd_ = -1;
};

}  // namespace switchboard::bench
