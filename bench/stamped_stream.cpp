#include "stamped_stream.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <kj/debug.h>
#include <kj/vector.h>

#include <cerrno>
#include <cstring>
#include <vector>

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
    if (readStart_ < readEnd_ && done < maxBytes) {
      size_t n = std::min(readEnd_ - readStart_, maxBytes - done);
      std::memcpy(out + done, readAhead_.get() + readStart_, n);
      if (counting_) countFrames(out + done, n);
      readStart_ += n;
      done += n;
      if (readStart_ == readEnd_) {
        readAhead_.reset();
        readStart_ = readEnd_ = 0;
      }
    }
    if (done >= minBytes || done == maxBytes) return done;
    if (!reader_.mayRead()) {
      return reader_.whenReadable().then([this, out, minBytes, maxBytes, done]() {
        return readLoop(out, minBytes, maxBytes, done);
      });
    }
    size_t wanted = maxBytes - done;
    bool direct = wanted >= kReadAheadBytes;
    kj::byte* into = direct ? out + done : threadReadScratch();
    int left = -1;
    ArrivalStamp stamp;
    ssize_t n =
        receiveStamped(fd_, into, direct ? wanted : kReadAheadBytes, MSG_DONTWAIT, stamp, &left);
    if (n > 0) {
      lastArrival_ = stamp;
      if (left == 0) reader_.readDrained();
      size_t got = static_cast<size_t>(n);
      size_t taken = std::min(got, wanted);
      if (!direct) std::memcpy(out + done, into, taken);
      if (counting_) countFrames(out + done, taken);
      done += taken;
      if (got > taken) {
        readAhead_ = std::make_unique_for_overwrite<kj::byte[]>(got - taken);
        std::memcpy(readAhead_.get(), into + taken, got - taken);
        readStart_ = 0;
        readEnd_ = got - taken;
      }
      continue;
    }
    if (n == 0) return done;  // end of stream
    int error = errno;
    if (error == EINTR) continue;
    if (error == EAGAIN || error == EWOULDBLOCK) {
      reader_.readWouldBlock();
      continue;
    }
    return KJ_EXCEPTION(DISCONNECTED, "read failed", strerror(error));
  }
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
  if (!directWrites_ || inner_->bufferedWriteBytes() != 0) {
    if (beforeWrite) beforeWrite(monotonicNs());
    return inner_->write(pieces);
  }
  std::vector<iovec> iov;
  iov.reserve(pieces.size());
  for (auto& piece : pieces) {
    iov.push_back(iovec{const_cast<kj::byte*>(piece.begin()), piece.size()});
  }
  msghdr message{};
  message.msg_iov = iov.data();
  message.msg_iovlen = iov.size();
  if (beforeWrite) beforeWrite(monotonicNs());
  ssize_t sent = ::sendmsg(fd_, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
  // What the kernel did not take (or an error, which AsioStream then reports) is queued.
  size_t skip = sent > 0 ? static_cast<size_t>(sent) : 0;
  kj::Vector<kj::ArrayPtr<const kj::byte>> rest;
  for (auto& piece : pieces) {
    if (skip >= piece.size()) {
      skip -= piece.size();
      continue;
    }
    rest.add(piece.slice(skip, piece.size()));
    skip = 0;
  }
  if (rest.empty()) return kj::READY_NOW;
  // AsioStream copies what it is given before write() returns.
  return inner_->write(rest.asPtr());
}

}  // namespace switchboard::bench
