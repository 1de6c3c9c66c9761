#pragma once
// A byte stream that can also be read and written without promises, where that needs no
// waiting: what LimitedMessageStream's fast path (connection_limits.h) needs from the socket
// under a connection, whichever end it is.

#include "net/socket_registration.h"

#include <kj/async-io.h>

namespace switchboard::net {

// A kj::AsyncIoStream over one socket that also hands out what it has read ahead, reads
// without waiting, tells a listener of the socket's next readability edge and takes a write
// at once. AsioStream is one (the host's and the client library's sockets); sbbench's
// StampedStream is another (its phones stamp their reads). A stream layered over one (TLS, a
// WebSocket) is not: it has no bytes of its own to hand out.
//
// Reading: the stream keeps the bytes it read past a request (bufferedReadBytes()) until a
// reader takes them, and readAheadNow() reads what the socket has now into that buffer. An
// end of stream or a failure met by readAheadNow() is not reported there: the next tryRead()
// reports it, as if it had read it. These are for a reader that has no read pending.
// Writing: write() copies the bytes and the pieces before it returns (they need not outlive
// the call, whatever its promise does); tryWriteNow() is write() without a promise.
//
// Used on the loop thread of the socket only, as the stream itself is.
class ImmediateIoStream : public kj::AsyncIoStream {
 public:
  // Bytes read from the socket and not yet handed to a reader.
  virtual size_t bufferedReadBytes() const = 0;
  // Hands up to `maxBytes` of those bytes to a reader at once, without a promise and without
  // touching the socket; returns how many.
  virtual size_t takeBuffered(void* out, size_t maxBytes) = 0;
  // Those bytes, left where they are (valid until the next read or take).
  virtual kj::ArrayPtr<const kj::byte> peekBuffered() const = 0;
  // With nothing buffered and the socket maybe readable: reads what it has now, without
  // waiting (one read, as tryRead() would make). True when bytes are buffered (then or
  // already). False when there is nothing to read yet, or the stream ended or failed (the next
  // tryRead() says which).
  virtual bool readAheadNow() = 0;
  // With nothing buffered, no end or failure met by readAheadNow() and the socket not readable
  // now: resolves at its next readability edge (then readAheadNow() may find bytes, the end or
  // a failure). Otherwise null: a reader reads at once.
  virtual kj::Maybe<kj::Promise<void>> whenNothingToRead() = 0;
  // The same wait, for a listener told from inside the reactor's handling of the edge
  // (SocketRegistration::ReadListener): true when it now listens, false (not listening) when
  // whenNothingToRead() would be null. stopListening(): no longer (if it still was).
  virtual bool listenReadable(SocketRegistration::ReadListener& listener) = 0;
  virtual void stopListening(SocketRegistration::ReadListener& listener) = 0;
  // write(pieces) without a promise, when the stream can take them without waiting (nothing
  // failed, not shut down, below its high-water mark with them): the pieces are copied and it
  // returns true. Otherwise nothing is taken and it returns false, and write() is the way (it
  // fails, or says when there is room).
  virtual bool tryWriteNow(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) = 0;
};

}  // namespace switchboard::net
