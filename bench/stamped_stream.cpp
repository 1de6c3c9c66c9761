#include "stamped_stream.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <kj/debug.h>
#include <kj/vector.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "server_process.h"

namespace switchboard::bench {

namespace {

constexpr size_t kReadAheadBytes = 64 * 1024;

// The loop thread's read-ahead buffer: a small read lands here and only the bytes past the
// request are copied to the stream (an idle connection holds no buffer).
kj::byte* threadReadScratch() {
  thread_local std::unique_ptr<kj::byte[]> scratch =
      std::make_unique_for_overwrite<kj::byte[]>(kReadAheadBytes);
  return scratch.get();
}

int dupOf(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  KJ_REQUIRE(copy >= 0, "dup of the phone's socket failed", strerror(errno));
  return copy;
}

}  // namespace

StampedStream::StampedStream(asio::io_context& io, kj::Own<net::AsioStream> inner,
                             bool directWrites)
    : inner_(kj::mv(inner)),
      fd_(KJ_ASSERT_NONNULL(inner_->getFd())),
      reader_(io, dupOf(fd_), [] {}),
      directWrites_(directWrites) {}

kj::Promise<size_t> StampedStream::tryRead(void* buffer, size_t minBytes, size_t maxBytes) {
  return readLoop(static_cast<kj::byte*>(buffer), minBytes, maxBytes, 0);
}

kj::Promise<size_t> StampedStream::readLoop(kj::byte* out, size_t minBytes, size_t maxBytes,
                                            size_t done) {
  for (;;) {
    // Served from what an earlier recvmsg() read ahead: those bytes keep its stamps.
    if (done < maxBytes) done += takeBuffered(out + done, maxBytes - done);
    if (done >= minBytes || done == maxBytes) return done;
    // Here nothing is buffered. An end or a failure readAheadNow() met is this read's.
    if (readAheadEnd_ >= 0) {
      int error = std::exchange(readAheadEnd_, -1);
      if (error == 0) return done;  // end of stream
      return KJ_EXCEPTION(DISCONNECTED, "read failed", strerror(error));
    }
    if (!reader_.mayRead()) {
      return reader_.whenReadable().then([this, out, minBytes, maxBytes, done]() {
        return readLoop(out, minBytes, maxBytes, done);
      });
    }
    size_t wanted = maxBytes - done;
    bool direct = wanted >= kReadAheadBytes;
    kj::byte* into = direct ? out + done : threadReadScratch();
    ssize_t n = receiveOnce(into, direct ? wanted : kReadAheadBytes);
    if (n > 0) {
      size_t got = static_cast<size_t>(n);
      size_t taken = std::min(got, wanted);
      if (!direct) std::memcpy(out + done, into, taken);
      if (counting_) countFrames(out + done, taken);
      done += taken;
      if (got > taken) keepReadAhead(into + taken, got - taken);
      continue;
    }
    if (n == 0) return done;  // end of stream
    if (n == -EAGAIN) continue;
    return KJ_EXCEPTION(DISCONNECTED, "read failed", strerror(static_cast<int>(-n)));
  }
}

ssize_t StampedStream::receiveOnce(kj::byte* into, size_t size) {
  for (;;) {
    int left = -1;
    ArrivalStamp stamp;
    ssize_t n = receiveStamped(fd_, into, size, MSG_DONTWAIT, stamp, &left);
    if (n > 0) {
      lastArrival_ = stamp;
      if (left == 0) reader_.readDrained();
      return n;
    }
    if (n == 0) return 0;
    int error = errno;
    if (error == EINTR) continue;
    if (error == EAGAIN || error == EWOULDBLOCK) {
      reader_.readWouldBlock();
      return -EAGAIN;
    }
    return -error;
  }
}

void StampedStream::keepReadAhead(const kj::byte* data, size_t size) {
  readAhead_ = std::make_unique_for_overwrite<kj::byte[]>(size);
  std::memcpy(readAhead_.get(), data, size);
  readStart_ = 0;
  readEnd_ = size;
}

size_t StampedStream::takeBuffered(void* out, size_t maxBytes) {
  size_t n = std::min(readEnd_ - readStart_, maxBytes);
  if (n == 0) return 0;
  auto* into = static_cast<kj::byte*>(out);
  std::memcpy(into, readAhead_.get() + readStart_, n);
  if (counting_) countFrames(into, n);
  readStart_ += n;
  if (readStart_ == readEnd_) {
    readAhead_.reset();
    readStart_ = readEnd_ = 0;
  }
  return n;
}

// As AsioStream::readAheadNow, with a stamped read.
bool StampedStream::readAheadNow() {
  if (readStart_ != readEnd_) return true;
  if (readAheadEnd_ >= 0 || !reader_.mayRead()) return false;
  ssize_t n = receiveOnce(threadReadScratch(), kReadAheadBytes);
  if (n > 0) keepReadAhead(threadReadScratch(), static_cast<size_t>(n));
  if (n <= 0 && n != -EAGAIN) readAheadEnd_ = static_cast<int>(-n);  // 0: the end
  return n > 0;
}

bool StampedStream::readsAtOnce() const {
  return readStart_ != readEnd_ || readAheadEnd_ >= 0 || reader_.mayRead();
}

kj::Maybe<kj::Promise<void>> StampedStream::whenNothingToRead() {
  if (readsAtOnce()) return nullptr;
  return reader_.whenReadable();
}

bool StampedStream::listenReadable(net::SocketRegistration::ReadListener& listener) {
  if (readsAtOnce()) return false;
  reader_.listenReadable(listener);
  return true;
}

// A frame (capnp/serialize.h): a segment count minus one (32 bits), each segment's size in
// words (32 bits each), padding to a whole word, then the segments.
void StampedStream::countFrames(const kj::byte* bytes, size_t size) {
  size_t at = 0;
  while (at < size) {
    if (skip_ > 0) {
      size_t n = static_cast<size_t>(std::min<std::uint64_t>(skip_, size - at));
      skip_ -= n;
      at += n;
      if (skip_ == 0) messageArrival_ = lastArrival_;  // the message's last byte
      continue;
    }
    word_ |= static_cast<std::uint32_t>(bytes[at++]) << (8 * wordBytes_);
    if (++wordBytes_ < 4) continue;
    std::uint32_t value = word_;
    word_ = 0;
    wordBytes_ = 0;
    if (!inTable_) {
      // The count: the table (4 bytes a segment after the count) is padded to a whole word.
      inTable_ = true;
      segmentsLeft_ = value + 1;
      rest_ = segmentsLeft_ % 2 == 0 ? 4 : 0;
      continue;
    }
    rest_ += static_cast<std::uint64_t>(value) * 8;
    if (--segmentsLeft_ == 0) {
      inTable_ = false;
      skip_ = rest_;
      rest_ = 0;
      if (skip_ == 0) messageArrival_ = lastArrival_;  // empty segments only
    }
  }
}

kj::Promise<void> StampedStream::write(const void* buffer, size_t size) {
  auto piece = kj::arrayPtr(static_cast<const kj::byte*>(buffer), size);
  return write(kj::arrayPtr(&piece, 1));
}

kj::Promise<void> StampedStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  if (directWrites_ && inner_->bufferedWriteBytes() == 0 && sendDirect(pieces)) {
    return kj::READY_NOW;
  }
  if (beforeWrite) beforeWrite(monotonicNs());
  return inner_->write(pieces);
}

bool StampedStream::tryWriteNow(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  if (directWrites_ && inner_->bufferedWriteBytes() == 0) return sendDirect(pieces);
  std::int64_t ns = monotonicNs();  // read before the bytes are handed on, told once taken
  if (!inner_->tryWriteNow(pieces)) return false;
  if (beforeWrite) beforeWrite(ns);
  return true;
}

bool StampedStream::sendDirect(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  // A batch the AsioStream could not take whole without waiting (at or over its high-water
  // mark), or of more pieces than fit here, goes the general way.
  constexpr size_t kMaxPieces = 128;
  size_t total = 0;
  for (auto& piece : pieces) total += piece.size();
  if (pieces.size() > kMaxPieces || total >= net::AsioStream::kHighWaterBytes) return false;
  iovec iov[kMaxPieces];
  for (size_t i = 0; i < pieces.size(); ++i) {
    iov[i] = iovec{const_cast<kj::byte*>(pieces[i].begin()), pieces[i].size()};
  }
  msghdr message{};
  message.msg_iov = iov;
  message.msg_iovlen = pieces.size();
  if (beforeWrite) beforeWrite(monotonicNs());
  ssize_t sent = ::sendmsg(fd_, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
  size_t skip = sent > 0 ? static_cast<size_t>(sent) : 0;
  if (skip == total) return true;
  // What the kernel did not take (or an error, which AsioStream then reports) is queued.
  kj::Vector<kj::ArrayPtr<const kj::byte>> rest(pieces.size());
  for (auto& piece : pieces) {
    if (skip >= piece.size()) {
      skip -= piece.size();
      continue;
    }
    rest.add(piece.slice(skip, piece.size()));
    skip = 0;
  }
  // Below the mark and behind nothing, the AsioStream takes it unless it failed or was shut
  // down; then the bytes are dropped, as write() would drop them, and the next write fails.
  inner_->tryWriteNow(rest.asPtr());
  return true;
}

}  // namespace switchboard::bench
