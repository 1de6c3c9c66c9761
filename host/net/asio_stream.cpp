#include "net/asio_stream.h"

#include <kj/debug.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <asio/post.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace switchboard::net {
namespace {

// "read failed: Connection reset by peer", without KJ_EXCEPTION's "expr = value" form.
kj::Exception syscallFailure(kj::Exception::Type type, const char* what, int error) {
  return kj::Exception(type, __FILE__, __LINE__, kj::str(what, ": ", std::strerror(error)));
}

kj::Exception disconnected(const char* what, int error) {
  return syscallFailure(kj::Exception::Type::DISCONNECTED, what, error);
}

bool isPeerGone(int error) {
  return error == ECONNRESET || error == EPIPE || error == ETIMEDOUT || error == ENOTCONN ||
         error == ECONNABORTED || error == EHOSTUNREACH || error == ENETUNREACH;
}

}  // namespace

AsioStream::AsioStream(asio::io_context& io, int fd, bool inqOn)
    : io_(io), alive_(std::make_shared<AsioStream*>(this)), socket_(io, fd, [this] {
        // From inside the reactor, which calls this only while the registration (a member)
        // and so this stream exist: only post the flush. One pointer captured: the function
        // holds it without an allocation.
        asio::post(io_, [alive = alive_] {
          if (AsioStream* self = *alive) {
            self->writeWaitPending_ = false;
            self->flush();
          }
        });
      }) {
  // Linux's TCP_INQ: each read also says what is left, so a read that emptied the socket is
  // known without a second read() that returns EAGAIN. Not for Unix sockets (refused there).
  int one = 1;
  inqHint_ = inqOn || ::setsockopt(socket_.fd(), SOL_TCP, TCP_INQ, &one, sizeof(one)) == 0;
}

AsioStream::~AsioStream() noexcept(false) {
  *alive_ = nullptr;
}

// ---------------------------------------------------------------------------------- reading

kj::Promise<size_t> AsioStream::tryRead(void* buffer, size_t minBytes, size_t maxBytes) {
  return readLoop(static_cast<kj::byte*>(buffer), minBytes, maxBytes, 0);
}

namespace {

// The network thread's read-ahead buffer: every read() of a small request lands
// here; the caller takes its part and only the rest (usually none, or the next
// message's first bytes) is copied to the stream. One per thread, allocated once.
kj::byte* threadReadScratch() {
  thread_local std::unique_ptr<kj::byte[]> scratch =
      std::make_unique_for_overwrite<kj::byte[]>(AsioStream::kReadBufferBytes);
  return scratch.get();
}

}  // namespace

kj::Promise<size_t> AsioStream::readLoop(kj::byte* out, size_t minBytes, size_t maxBytes,
                                         size_t done) {
  for (;;) {
    size_t buffered = readEnd_ - readStart_;
    // A zero-byte read (Cap'n Proto reads an empty segment so, with a null buffer) copies
    // nothing: memcpy with a null pointer is undefined even for zero bytes (found by fuzzing).
    if (buffered > 0 && done < maxBytes) {
      size_t n = std::min(buffered, maxBytes - done);
      std::memcpy(out + done, readBuffer_.get() + readStart_, n);
      readStart_ += n;
      done += n;
      if (readStart_ == readEnd_) releaseReadBuffer();
    }
    if (done >= minBytes || done == maxBytes) return done;

    // Here nothing is buffered. An end or a failure readAheadNow() met is this read's.
    if (readAheadEnd_ >= 0) {
      int error = std::exchange(readAheadEnd_, -1);
      if (error == 0) return done;  // EOF
      return readFailure(error);
    }
    // Wait for data unless the socket may have some.
    if (!socket_.mayRead()) {
      return socket_.whenReadable().then([this, out, minBytes, maxBytes, done]() {
        return readLoop(out, minBytes, maxBytes, done);
      });
    }
    // Big reads go straight to the caller's buffer; small ones read ahead through the
    // thread's scratch buffer.
    size_t wanted = maxBytes - done;
    bool direct = wanted >= kReadBufferBytes;
    kj::byte* into = direct ? out + done : threadReadScratch();
    size_t asked = direct ? wanted : kReadBufferBytes;
    ssize_t n = readOnce(into, asked);
    if (n > 0) {
      size_t got = static_cast<size_t>(n);
      size_t taken = std::min(got, wanted);
      if (!direct) std::memcpy(out + done, into, taken);
      done += taken;
      if (got > taken) keepReadAhead(into + taken, got - taken);
      continue;
    }
    if (n == 0) return done;  // EOF
    if (n == -EAGAIN) continue;
    return readFailure(static_cast<int>(-n));
  }
}

ssize_t AsioStream::readOnce(kj::byte* into, size_t size) {
  for (;;) {
    bool drained = false;
    ssize_t n = inqHint_ ? readWithHint(into, size, drained) : ::read(socket_.fd(), into, size);
    if (n > 0) {
      if (drained) socket_.readDrained();
      return n;
    }
    if (n == 0) return 0;
    int error = errno;
    if (error == EINTR) continue;
    if (error == EAGAIN || error == EWOULDBLOCK) {
      socket_.readWouldBlock();
      return -EAGAIN;
    }
    return -error;
  }
}

kj::Exception AsioStream::readFailure(int error) {
  if (isPeerGone(error)) return disconnected("read failed", error);
  return syscallFailure(kj::Exception::Type::FAILED, "read failed", error);
}

ssize_t AsioStream::readWithHint(kj::byte* into, size_t size, bool& drained) {
  iovec data{into, size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr message{};
  message.msg_iov = &data;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t n = ::recvmsg(socket_.fd(), &message, 0);
  if (n <= 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
    if (c->cmsg_level == SOL_TCP && c->cmsg_type == TCP_CM_INQ) {
      int left = 0;
      std::memcpy(&left, CMSG_DATA(c), sizeof(left));
      // Zero: nothing queued and no end of stream or reset pending (the kernel reports 1 then).
      drained = left == 0;
    }
  }
  return n;
}

size_t AsioStream::takeBuffered(void* out, size_t maxBytes) {
  size_t n = std::min(readEnd_ - readStart_, maxBytes);
  if (n == 0) return 0;
  std::memcpy(out, readBuffer_.get() + readStart_, n);
  readStart_ += n;
  if (readStart_ == readEnd_) releaseReadBuffer();
  return n;
}

kj::Maybe<kj::Promise<void>> AsioStream::whenNothingToRead() {
  if (readEnd_ != readStart_ || readAheadEnd_ >= 0 || socket_.mayRead()) return nullptr;
  return socket_.whenReadable();
}

bool AsioStream::listenReadable(SocketRegistration::ReadListener& listener) {
  if (readEnd_ != readStart_ || readAheadEnd_ >= 0 || socket_.mayRead()) return false;
  socket_.listenReadable(listener);
  return true;
}

bool AsioStream::readAheadNow() {
  if (readEnd_ != readStart_) return true;
  if (readAheadEnd_ >= 0 || !socket_.mayRead()) return false;
  kj::byte* into = threadReadScratch();
  ssize_t n = readOnce(into, kReadBufferBytes);
  if (n > 0) {
    keepReadAhead(into, static_cast<size_t>(n));
    return true;
  }
  if (n != -EAGAIN) readAheadEnd_ = static_cast<int>(-n);  // 0: the end
  return false;
}

void AsioStream::keepReadAhead(const kj::byte* data, size_t size) {
  readBuffer_ = std::make_unique_for_overwrite<kj::byte[]>(size);
  std::memcpy(readBuffer_.get(), data, size);
  readCapacity_ = size;
  readStart_ = 0;
  readEnd_ = size;
}

void AsioStream::releaseReadBuffer() {
  readBuffer_.reset();
  readCapacity_ = 0;
  readStart_ = readEnd_ = 0;
}

void AsioStream::abortRead() {
  ::shutdown(socket_.fd(), SHUT_RD);
}

// ---------------------------------------------------------------------------------- writing

kj::Promise<void> AsioStream::write(const void* buffer, size_t size) {
  if (writeError_) return kj::cp(*writeError_);
  if (shutdownRequested_) return KJ_EXCEPTION(FAILED, "write() after shutdownWrite()");
  append(static_cast<const kj::byte*>(buffer), size);
  return spaceAvailable();
}

kj::Promise<void> AsioStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  if (writeError_) return kj::cp(*writeError_);
  if (shutdownRequested_) return KJ_EXCEPTION(FAILED, "write() after shutdownWrite()");
  for (auto piece : pieces) append(piece.begin(), piece.size());
  return spaceAvailable();
}

bool AsioStream::tryWriteNow(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  if (writeError_ || shutdownRequested_) return false;
  size_t size = 0;
  for (auto piece : pieces) size += piece.size();
  if (bufferedWriteBytes() + size >= kHighWaterBytes) return false;
  for (auto piece : pieces) append(piece.begin(), piece.size());
  return true;
}

kj::Promise<void> AsioStream::whenWriteDisconnected() {
  if (writeError_ != nullptr) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  disconnectWaiters_.push_back(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void AsioStream::shutdownWrite() {
  shutdownRequested_ = true;
  if (bufferedWriteBytes() == 0 && !writeShut_) {
    writeShut_ = true;
    ::shutdown(socket_.fd(), SHUT_WR);
  }
}

namespace {

// The thread's spare write buffers of AsioStream::kInitialWriteBytes.
std::vector<std::unique_ptr<kj::byte[]>>& threadSpareWriteBuffers() {
  thread_local std::vector<std::unique_ptr<kj::byte[]>> spares;
  return spares;
}

}  // namespace

size_t AsioStream::spareWriteBuffers() {
  return threadSpareWriteBuffers().size();
}

void AsioStream::append(const kj::byte* data, size_t size) {
  if (size > 0) {  // memcpy with a null pointer is undefined even for zero bytes
    if (writeCapacity_ - writeEnd_ < size) makeWriteRoom(size);
    std::memcpy(writeBuffer_.get() + writeEnd_, data, size);
    writeEnd_ += size;
  }
  scheduleFlush();
}

void AsioStream::makeWriteRoom(size_t size) {
  size_t buffered = writeEnd_ - writeStart_;
  size_t needed = buffered + size;
  if (writeBuffer_ == nullptr && needed <= kInitialWriteBytes) {
    // The buffer starts at a few KiB so a batch of small messages does not regrow it each
    // time; a spare one if the thread has it.
    auto& spares = threadSpareWriteBuffers();
    if (spares.empty()) {
      writeBuffer_ = std::make_unique_for_overwrite<kj::byte[]>(kInitialWriteBytes);
    } else {
      writeBuffer_ = std::move(spares.back());
      spares.pop_back();
    }
    writeCapacity_ = kInitialWriteBytes;
    writeStart_ = writeEnd_ = 0;
    return;
  }
  if (needed <= writeCapacity_) {
    // Room enough once the sent bytes at the front are dropped.
    std::memmove(writeBuffer_.get(), writeBuffer_.get() + writeStart_, buffered);
  } else {
    size_t capacity = std::max({needed, writeCapacity_ * 2, kInitialWriteBytes});
    auto bigger = std::make_unique_for_overwrite<kj::byte[]>(capacity);
    if (buffered > 0) std::memcpy(bigger.get(), writeBuffer_.get() + writeStart_, buffered);
    releaseWriteBuffer();
    writeBuffer_ = std::move(bigger);
    writeCapacity_ = capacity;
  }
  writeStart_ = 0;
  writeEnd_ = buffered;
}

void AsioStream::releaseWriteBuffer() {
  auto& spares = threadSpareWriteBuffers();
  if (writeCapacity_ == kInitialWriteBytes && spares.size() < kSpareWriteBuffers) {
    spares.push_back(std::move(writeBuffer_));
  }
  writeBuffer_.reset();
  writeCapacity_ = writeStart_ = writeEnd_ = 0;
}

kj::Promise<void> AsioStream::spaceAvailable() {
  if (bufferedWriteBytes() < kHighWaterBytes) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  spaceWaiters_.push_back(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void AsioStream::scheduleFlush() {
  // While waiting for writability the wait's handler flushes; no second flush is needed.
  if (flushPosted_ || writeWaitPending_) return;
  flushPosted_ = true;
  if (AsioEventPort::deferToDrainEnd(flushAtDrainEnd_)) return;
  asio::post(io_, [alive = alive_] {
    if (AsioStream* self = *alive) {
      self->flushPosted_ = false;
      self->flush();
    }
  });
}

void AsioStream::FlushAtDrainEnd::atDrainEnd() {
  stream.flushPosted_ = false;
  stream.flush();
}

void AsioStream::flush() {
  while (writeStart_ < writeEnd_) {
    ssize_t n = ::send(socket_.fd(), writeBuffer_.get() + writeStart_, writeEnd_ - writeStart_,
                       MSG_NOSIGNAL);
    if (n > 0) {
      writeStart_ += static_cast<size_t>(n);
      continue;
    }
    int error = errno;
    if (error == EINTR) continue;
    if (error == EAGAIN || error == EWOULDBLOCK) {
      writeWaitPending_ = true;
      socket_.writeBlocked();
      break;
    }
    failWrites(error);
    return;
  }

  if (writeStart_ == writeEnd_) {
    // Released, not cleared: an idle connection keeps no capacity (the thread may keep it as
    // a spare for the next stream that writes).
    releaseWriteBuffer();
  }

  if (bufferedWriteBytes() < kHighWaterBytes && !spaceWaiters_.empty()) {
    auto waiters = std::move(spaceWaiters_);
    spaceWaiters_.clear();
    for (auto& waiter : waiters) waiter->fulfill();
  }
  if (bufferedWriteBytes() == 0 && shutdownRequested_ && !writeShut_) {
    writeShut_ = true;
    ::shutdown(socket_.fd(), SHUT_WR);
  }
}

void AsioStream::failWrites(int error) {
  kj::Exception exception =
      isPeerGone(error) ? disconnected("write failed", error)
                        : syscallFailure(kj::Exception::Type::FAILED, "write failed", error);
  releaseWriteBuffer();
  auto waiters = std::move(spaceWaiters_);
  spaceWaiters_.clear();
  for (auto& waiter : waiters) waiter->reject(kj::cp(exception));
  auto disconnectWaiters = std::move(disconnectWaiters_);
  disconnectWaiters_.clear();
  for (auto& waiter : disconnectWaiters) waiter->fulfill();
  writeError_ = std::make_unique<kj::Exception>(kj::mv(exception));
}

// ------------------------------------------------------------------------- socket queries

void AsioStream::getsockopt(int level, int option, void* value, kj::uint* length) {
  socklen_t socklen = *length;
  KJ_SYSCALL(::getsockopt(socket_.fd(), level, option, value, &socklen));
  *length = socklen;
}

void AsioStream::setsockopt(int level, int option, const void* value, kj::uint length) {
  KJ_SYSCALL(::setsockopt(socket_.fd(), level, option, value, length));
}

void AsioStream::getsockname(struct sockaddr* addr, kj::uint* length) {
  socklen_t socklen = *length;
  KJ_SYSCALL(::getsockname(socket_.fd(), addr, &socklen));
  *length = socklen;
}

void AsioStream::getpeername(struct sockaddr* addr, kj::uint* length) {
  socklen_t socklen = *length;
  KJ_SYSCALL(::getpeername(socket_.fd(), addr, &socklen));
  *length = socklen;
}

}  // namespace switchboard::net
