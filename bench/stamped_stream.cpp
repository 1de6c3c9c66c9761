#include "stamped_stream.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <kj/debug.h>
#include <kj/vector.h>

#include <vector>

#include "server_process.h"

namespace switchboard::bench {

StampedStream::StampedStream(kj::Own<net::AsioStream> inner, bool directWrites)
    : inner_(kj::mv(inner)), fd_(KJ_ASSERT_NONNULL(inner_->getFd())), directWrites_(directWrites) {}

kj::Promise<size_t> StampedStream::tryRead(void* buffer, size_t minBytes, size_t maxBytes) {
  // Served from what an earlier read() syscall buffered: those bytes keep that stamp.
  if (inner_->bufferedReadBytes() >= minBytes) return inner_->tryRead(buffer, minBytes, maxBytes);
  return inner_->tryRead(buffer, minBytes, maxBytes).then([this](size_t n) {
    lastReadNs_ = monotonicNs();
    return n;
  });
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
