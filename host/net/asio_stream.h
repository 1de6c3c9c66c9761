#pragma once
// A kj::AsyncIoStream over a socket registered with an Asio io_context.

#include "net/asio_event_port.h"
#include "net/immediate_io_stream.h"
#include "net/socket_registration.h"

#include <kj/async-io.h>

#include <memory>
#include <vector>

namespace switchboard::net {

// A buffered, batching kj::AsyncIoStream over a connected stream socket (TCP or Unix).
//
// Ownership and threading: owns the descriptor (closed on destruction). Created, used and
// destroyed on the thread running `io`, inside that thread's KJ event loop.
//
// I/O: Asio's reactor is used only for readiness, through a SocketRegistration (the socket
// is added to the epoll set once; waiting costs no system call). Reads and writes are
// non-blocking syscalls made here, so a dropped (cancelled) read promise never leaves Asio
// writing into a freed buffer. On TCP every read also asks the kernel what is left (TCP_INQ),
// so after a read that emptied the socket the next one waits for a readability edge instead
// of trying first and getting EAGAIN; on Unix sockets an EAGAIN is what says so. Small
// reads go through a 64 KiB buffer: Cap'n Proto 0.9.2 reads each message with two exact-size
// reads, which would otherwise cost two syscalls per message.
// write() copies into an outgoing buffer before it returns (the caller's bytes and pieces need
// not outlive the call) and resolves at once while that buffer is below kHighWaterBytes
// (later, once flushed below it, otherwise: back-pressure); the buffer is flushed at the end
// of the current KJ drain (AsioEventPort::deferToDrainEnd), or by a handler posted behind it
// when the write was made outside a drain, so the Call/Return/Finish messages
// of many calls leave in one send().
//
// Memory: an idle connection (always one pending read, nothing to send) holds no buffer.
// A small read lands in its network thread's 64 KiB scratch buffer; the stream keeps only
// the bytes read past the request (sized to them), released once handed out. The write
// buffer is released once flushed. Thousands of idle sessions would otherwise each pin
// 64 KiB, and a buffer per read() cost an allocation per message. A write buffer of
// kInitialWriteBytes (what nearly every batch needs) comes from, and goes back to, a few
// spares its network thread keeps (at most kSpareWriteBuffers), so a connection that writes
// costs no allocation per batch; a larger one is allocated and freed.
//
// Failure: a peer that resets or vanishes makes reads throw kj::Exception::Type::DISCONNECTED
// (or return EOF) and pending and later writes reject with DISCONNECTED; never a crash or a
// SIGPIPE. Data still buffered when the stream is destroyed is discarded.
class AsioStream final : public ImmediateIoStream {
 public:
  static constexpr size_t kReadBufferBytes = 64 * 1024;
  static constexpr size_t kHighWaterBytes = 256 * 1024;
  static constexpr size_t kInitialWriteBytes = 4 * 1024;
  static constexpr size_t kSpareWriteBuffers = 16;

  // Takes ownership of `fd`, a connected non-blocking stream socket. `inqOn`: the socket
  // already has TCP_INQ (inherited from its listening socket), so it is not set again.
  AsioStream(asio::io_context& io, int fd, bool inqOn = false);
  ~AsioStream() noexcept(false);
  AsioStream(const AsioStream&) = delete;
  AsioStream& operator=(const AsioStream&) = delete;

  kj::Promise<size_t> tryRead(void* buffer, size_t minBytes, size_t maxBytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  kj::Promise<void> whenWriteDisconnected() override;
  // ImmediateIoStream (immediate_io_stream.h): the high-water mark is kHighWaterBytes, and
  // what tryWriteNow() takes is flushed as write() flushes it.
  bool tryWriteNow(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;

  // Flushes what is buffered, then shuts down the sending side.
  void shutdownWrite() override;
  void abortRead() override;
  void getsockopt(int level, int option, void* value, kj::uint* length) override;
  void setsockopt(int level, int option, const void* value, kj::uint length) override;
  void getsockname(struct sockaddr* addr, kj::uint* length) override;
  void getpeername(struct sockaddr* addr, kj::uint* length) override;
  kj::Maybe<int> getFd() const override { return socket_.fd(); }

  // Bytes accepted by write() and not yet handed to the kernel.
  size_t bufferedWriteBytes() const { return writeEnd_ - writeStart_; }
  // ImmediateIoStream's reading side.
  size_t bufferedReadBytes() const override { return readEnd_ - readStart_; }
  size_t takeBuffered(void* out, size_t maxBytes) override;
  kj::ArrayPtr<const kj::byte> peekBuffered() const override {
    return kj::arrayPtr(readBuffer_.get() + readStart_, readEnd_ - readStart_);
  }
  kj::Maybe<kj::Promise<void>> whenNothingToRead() override;
  bool listenReadable(SocketRegistration::ReadListener& listener) override;
  void stopListening(SocketRegistration::ReadListener& listener) override {
    socket_.stopListening(listener);
  }
  bool readAheadNow() override;
  // Memory held for reading ahead: the bytes read past a request until taken, else 0.
  size_t bufferedReadCapacity() const { return readCapacity_; }
  // Memory held for outgoing bytes: 0 once everything was flushed.
  size_t bufferedWriteCapacity() const { return writeCapacity_; }
  // Write buffers of kInitialWriteBytes kept spare on this thread (see Memory above).
  static size_t spareWriteBuffers();

 private:
  kj::Promise<size_t> readLoop(kj::byte* out, size_t minBytes, size_t maxBytes, size_t done);
  // recvmsg() with the TCP_INQ hint; `drained` set when nothing is left to read.
  ssize_t readWithHint(kj::byte* into, size_t size, bool& drained);
  // One read from the socket (retried on EINTR) that keeps the registration told: the bytes
  // read (> 0), 0 at the end of the stream, -EAGAIN when nothing is there now (mayRead() is
  // then false), else -errno.
  ssize_t readOnce(kj::byte* into, size_t size);
  static kj::Exception readFailure(int error);
  void keepReadAhead(const kj::byte* data, size_t size);
  void releaseReadBuffer();
  void append(const kj::byte* data, size_t size);
  // Room for `size` more bytes after writeEnd_ (the buffered bytes moved to its start).
  void makeWriteRoom(size_t size);
  void releaseWriteBuffer();
  kj::Promise<void> spaceAvailable();
  void scheduleFlush();
  void flush();
  // The flush at the end of the drain that wrote.
  struct FlushAtDrainEnd final : AsioEventPort::DrainEndTask {
    explicit FlushAtDrainEnd(AsioStream& stream) : stream(stream) {}
    void atDrainEnd() override;
    AsioStream& stream;
  };
  void failWrites(int error);

  asio::io_context& io_;
  // Posted Asio handlers hold this token, cleared on destruction, instead of `this`.
  std::shared_ptr<AsioStream*> alive_;
  SocketRegistration socket_;  // owns the descriptor

  // Null while nothing is buffered; not std::vector, whose zero-fill would touch every page.
  std::unique_ptr<kj::byte[]> readBuffer_;
  size_t readCapacity_ = 0;
  size_t readStart_ = 0;
  size_t readEnd_ = 0;

  bool inqHint_ = false;  // TCP_INQ is on: reads say what is left
  // What readAheadNow() read instead of bytes, for the next tryRead(): -1 nothing, 0 the end
  // of the stream, else the read's errno.
  int readAheadEnd_ = -1;

  // Null while nothing is buffered; bytes [writeStart_, writeEnd_) wait to be sent.
  std::unique_ptr<kj::byte[]> writeBuffer_;
  size_t writeCapacity_ = 0;
  size_t writeStart_ = 0;
  size_t writeEnd_ = 0;
  FlushAtDrainEnd flushAtDrainEnd_{*this};
  bool flushPosted_ = false;  // a flush is queued (at the drain's end or posted)
  bool writeWaitPending_ = false;
  bool shutdownRequested_ = false;
  bool writeShut_ = false;
  // Behind a pointer: a kj::Exception is ~400 bytes (its trace), and every idle
  // connection would carry it for nothing.
  std::unique_ptr<kj::Exception> writeError_;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> spaceWaiters_;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> disconnectWaiters_;
};

}  // namespace switchboard::net
