#include "net/connection_limits.h"

#include <capnp/rpc.capnp.h>
#include <kj/debug.h>

#include <cstring>
#include <new>
#include <string>
#include <vector>

namespace switchboard::net {

LimitedMessageStream::LimitedMessageStream(kj::AsyncIoStream& stream,
                                           const ConnectionLimits& limits,
                                           ViolationHandler onViolation)
    : stream_(stream),
      direct_(dynamic_cast<ImmediateIoStream*>(&stream)),
      inner_(stream),
      maxCallsInFlight_(limits.maxCallsInFlight),
      onViolation_(std::move(onViolation)) {
  readerOptions_.traversalLimitInWords = limits.maxMessageBytes / sizeof(capnp::word);
  readerOptions_.nestingLimit = limits.nestingLimit;
}

kj::Exception LimitedMessageStream::violation(std::string reason) {
  if (!violated_) {
    violated_ = true;
    if (onViolation_) onViolation_(reason);
  }
  return kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::str(reason.c_str()));
}

namespace {

// A message of one segment read off the stream: the reader and the segment's words in one
// allocation (the words right after the object), freed together. Also the IncomingRpcMessage
// a TwoPartyConnection hands the RPC system when it takes the message at once.
class OneSegmentMessage final : public capnp::MessageReader, public capnp::IncomingRpcMessage {
 public:
  static kj::Own<OneSegmentMessage> make(size_t words, const capnp::ReaderOptions& options) {
    void* block = ::operator new(sizeof(OneSegmentMessage) + words * sizeof(capnp::word));
    return kj::Own<OneSegmentMessage>(new (block) OneSegmentMessage(words, options), kDisposer);
  }

  kj::ArrayPtr<capnp::word> words() {
    return kj::arrayPtr(reinterpret_cast<capnp::word*>(this + 1), words_);
  }
  kj::ArrayPtr<const capnp::word> getSegment(capnp::uint id) override {
    if (id != 0) return nullptr;
    return kj::arrayPtr(reinterpret_cast<const capnp::word*>(this + 1), words_);
  }
  capnp::AnyPointer::Reader getBody() override { return getRoot<capnp::AnyPointer>(); }
  size_t sizeInWords() override { return words_; }

 private:
  OneSegmentMessage(size_t words, const capnp::ReaderOptions& options)
      : capnp::MessageReader(options), words_(words) {}

  // Given the whole object's address (kj::Own's disposer gets the most derived pointer).
  struct Disposer final : public kj::Disposer {
    void disposeImpl(void* pointer) const override {
      static_cast<OneSegmentMessage*>(pointer)->~OneSegmentMessage();
      ::operator delete(pointer);
    }
  };
  static inline const Disposer kDisposer{};

  size_t words_;
};
static_assert(sizeof(OneSegmentMessage) % sizeof(capnp::word) == 0,
              "the words follow the object, aligned");

// A message of several segments read off the stream: its words in one array, and where each
// segment starts.
struct ReadSegments {
  kj::Array<capnp::word> ownedWords;
  kj::Array<kj::ArrayPtr<const capnp::word>> segmentTable;
};
class ReadMessage final : private ReadSegments, public capnp::SegmentArrayMessageReader {
 public:
  ReadMessage(ReadSegments read, capnp::ReaderOptions options)
      : ReadSegments(kj::mv(read)), SegmentArrayMessageReader(segmentTable, options) {}
};
}  // namespace

kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> LimitedMessageStream::tryReadMessage(
    kj::ArrayPtr<kj::AutoCloseFd>, capnp::ReaderOptions, kj::ArrayPtr<capnp::word>) {
  // The caller's options (the vat network's, capnp's defaults) are replaced by ours: the vat
  // network also checks what it *sends* against its own options, and the server's deliveries
  // are larger than anything a peer needs to send.
  //
  // The framing is capnp's (serialize.h): a table of segment sizes, then the segments. It is
  // read here, not by capnp::tryReadMessage, because that one makes its MessageReader (with
  // ~200 bytes of arena space) before the first byte comes: an idle connection held it.
  if (violated_) return violation("connection already over its limits");
  // What the socket already has is read now (readAheadNow: one read, as tryRead would make),
  // so a message that is there costs no read promise either; an end or a failure met there
  // is reported by the tryRead below.
  if (direct_ != nullptr && direct_->bufferedReadBytes() == 0) direct_->readAheadNow();
  if (direct_ != nullptr && direct_->bufferedReadBytes() >= sizeof(firstWord_)) {
    direct_->takeBuffered(firstWord_, sizeof(firstWord_));
    return readAfterFirstWord();
  }
  return stream_.tryRead(firstWord_, sizeof(firstWord_), sizeof(firstWord_))
      .then(
          [this](size_t bytes) -> kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> {
            if (bytes == 0) return kj::Maybe<capnp::MessageReaderAndFds>(nullptr);
            if (bytes < sizeof(firstWord_)) {
              return KJ_EXCEPTION(DISCONNECTED, "the peer ended the stream inside a message");
            }
            return readAfterFirstWord();
          },
          [this](kj::Exception&& exception) -> kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> {
            return unreadable(kj::mv(exception));
          });
}

void LimitedMessageStream::takeWhole(kj::Own<capnp::IncomingRpcMessage>& message,
                                     kj::Maybe<kj::Exception>& failure) {
  // Only the plain case: one segment, whole, nothing amiss. Everything else (more segments, a
  // message still arriving, an end or failure met, a size over the limit, a connection already
  // over its limits) is tryReadMessage()'s, which reports it as before.
  if (direct_ == nullptr || violated_) return;
  if (direct_->bufferedReadBytes() == 0 && !direct_->readAheadNow()) return;
  auto buffered = direct_->peekBuffered();
  if (buffered.size() < sizeof(firstWord_)) return;
  capnp::_::WireValue<uint32_t> first[2];
  std::memcpy(first, buffered.begin(), sizeof(first));
  uint32_t words = first[1].get();
  if (first[0].get() != 0 || words > readerOptions_.traversalLimitInWords) return;
  size_t bytes = sizeof(first) + size_t{words} * sizeof(capnp::word);
  if (buffered.size() < bytes) return;
  kj::Own<OneSegmentMessage> taken = OneSegmentMessage::make(words, readerOptions_);
  direct_->takeBuffered(first, sizeof(first));
  direct_->takeBuffered(taken->words().begin(), bytes - sizeof(first));
  failure = checkIncoming(*taken);
  if (failure == nullptr) message = kj::mv(taken);
}

kj::Maybe<kj::Promise<kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>>>
LimitedMessageStream::takeWholeMessage() {
  using Result = kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>;
  kj::Own<capnp::IncomingRpcMessage> message;
  kj::Maybe<kj::Exception> failure;
  takeWhole(message, failure);
  KJ_IF_MAYBE (exception, failure) {
    return kj::Promise<Result>(kj::mv(*exception));
  }
  if (message.get() == nullptr) return nullptr;
  return kj::Promise<Result>(Result(kj::mv(message)));
}

// The promise of nextMessageWhenReadable(): a read wait that takes the message itself, at the
// edge (in the reactor's callback), and resolves with it; no KJ turn between the edge and the
// RPC system's continuation. A spurious edge (the socket had nothing after all) waits for the
// next; anything but a whole message (half of one, several segments, the end, a failure)
// becomes the connection's receiveIncomingMessage(), whose node this one then stands for.
// Holds no kj::Exception of its own (an idle connection always has one pending).
class NextMessage final : public kj::_::PromiseNode, public SocketRegistration::ReadListener {
 public:
  NextMessage(LimitedMessageStream& stream, capnp::_::VatNetworkBase::Connection& connection)
      : stream_(stream), connection_(connection) {}
  ~NextMessage() noexcept(false) {
    if (listening_) stream_.direct_->stopListening(*this);
  }

  bool listen() { return listening_ = stream_.direct_->listenReadable(*this); }

  void readable() override {
    listening_ = false;
    kj::Maybe<kj::Exception> failure;
    stream_.takeWhole(message_, failure);
    KJ_IF_MAYBE (exception, failure) {
      failure_ = kj::heap<kj::Exception>(kj::mv(*exception));
    }
    if (message_.get() != nullptr || failure_.get() != nullptr) {
      onReadyEvent_.arm();
      return;
    }
    if (listen()) return;  // nothing there after all
    otherwise_ = kj::_::PromiseNode::from(connection_.receiveIncomingMessage());
    if (parent_ != nullptr) otherwise_->onReady(parent_);
  }
  void registrationGone() override { listening_ = false; }

  void onReady(kj::_::Event* event) noexcept override {
    if (otherwise_.get() != nullptr) {
      otherwise_->onReady(event);
      return;
    }
    parent_ = event;
    onReadyEvent_.init(event);
  }
  void get(kj::_::ExceptionOrValue& output) noexcept override {
    using Result = kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>;
    if (otherwise_.get() != nullptr) {
      otherwise_->get(output);
    } else if (failure_.get() != nullptr) {
      output.addException(kj::mv(*failure_));
    } else {
      output.as<Result>() = Result(kj::mv(message_));
    }
  }
  void tracePromise(kj::_::TraceBuilder& builder, bool stopAtNextEvent) override {
    if (otherwise_.get() != nullptr) otherwise_->tracePromise(builder, stopAtNextEvent);
  }

 private:
  LimitedMessageStream& stream_;
  capnp::_::VatNetworkBase::Connection& connection_;
  bool listening_ = false;
  kj::_::Event* parent_ = nullptr;
  OnReadyEvent onReadyEvent_;
  kj::Own<capnp::IncomingRpcMessage> message_;
  kj::Own<kj::Exception> failure_;
  kj::Own<kj::_::PromiseNode> otherwise_;
};

kj::Maybe<kj::Promise<kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>>>
LimitedMessageStream::nextMessageWhenReadable(capnp::_::VatNetworkBase::Connection& connection) {
  if (direct_ == nullptr || violated_) return nullptr;
  auto next = kj::heap<NextMessage>(*this, connection);
  if (!next->listen()) return nullptr;
  return kj::_::PromiseNode::to<kj::Promise<kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>>>(
      kj::mv(next));
}

kj::Maybe<kj::Promise<void>> LimitedMessageStream::whenNothingToRead() {
  if (direct_ == nullptr || violated_) return nullptr;
  return direct_->whenNothingToRead();
}

kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> LimitedMessageStream::readAfterFirstWord() {
  uint32_t segmentCount = firstWord_[0].get() + 1;
  if (firstWord_[0].get() >= kMaxSegments) {
    return violation("unreadable message: Message has too many segments (" +
                     std::to_string(firstWord_[0].get()) + " + 1)");
  }
  if (segmentCount == 1) {
    uint32_t size = firstWord_[1].get();
    if (size > readerOptions_.traversalLimitInWords) return tooLarge(size);
    return readOneSegment(size);
  }
  // The rest of the table: segmentCount - 1 sizes, padded to a whole word.
  auto table = kj::heapArray<capnp::_::WireValue<uint32_t>>((segmentCount / 2) * 2);
  auto into = table.asBytes();
  return stream_.read(into.begin(), into.size())
      .then(
          [this, segmentCount,
           table = kj::mv(table)]() mutable -> kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> {
            std::vector<uint32_t> sizes(segmentCount);
            sizes[0] = firstWord_[1].get();
            uint64_t total = sizes[0];
            for (uint32_t i = 1; i < segmentCount; ++i) {
              sizes[i] = table[i - 1].get();
              total += sizes[i];
            }
            if (total > readerOptions_.traversalLimitInWords) return tooLarge(total);
            return readSegments(kj::arrayPtr(sizes.data(), sizes.size()));
          },
          [this](kj::Exception&& exception) -> kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> {
            return unreadable(kj::mv(exception));
          });
}

kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> LimitedMessageStream::readOneSegment(
    uint32_t words) {
  kj::Own<OneSegmentMessage> message = OneSegmentMessage::make(words, readerOptions_);
  kj::ArrayPtr<kj::byte> into = message->words().asBytes();
  if (direct_ != nullptr && direct_->bufferedReadBytes() >= into.size()) {
    direct_->takeBuffered(into.begin(), into.size());
    return kj::evalNow([&] { return received(kj::mv(message)); });
  }
  kj::Promise<void> body = kj::READY_NOW;
  if (into.size() > 0) body = stream_.read(into.begin(), into.size());
  return body.then(
      [this, message = kj::mv(message)]() mutable { return received(kj::mv(message)); },
      [this](kj::Exception&& exception) -> kj::Maybe<capnp::MessageReaderAndFds> {
        kj::throwFatalException(unreadable(kj::mv(exception)));
      });
}

kj::Maybe<capnp::MessageReaderAndFds> LimitedMessageStream::received(
    kj::Own<capnp::MessageReader> message) {
  countIncoming(*message);
  return capnp::MessageReaderAndFds{kj::mv(message), nullptr};
}

kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> LimitedMessageStream::readSegments(
    kj::ArrayPtr<const uint32_t> sizes) {
  uint64_t total = 0;
  for (uint32_t size : sizes) total += size;
  ReadSegments read;
  read.ownedWords = kj::heapArray<capnp::word>(total);
  read.segmentTable = kj::heapArray<kj::ArrayPtr<const capnp::word>>(sizes.size());
  size_t offset = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    read.segmentTable[i] = kj::arrayPtr(read.ownedWords.begin() + offset, sizes[i]);
    offset += sizes[i];
  }
  kj::Promise<void> body = kj::READY_NOW;
  if (total > 0) body = stream_.read(read.ownedWords.begin(), total * sizeof(capnp::word));
  return body.then(
      [this, read = kj::mv(read)]() mutable -> kj::Maybe<capnp::MessageReaderAndFds> {
        return received(kj::heap<ReadMessage>(kj::mv(read), readerOptions_));
      },
      [this](kj::Exception&& exception) -> kj::Maybe<capnp::MessageReaderAndFds> {
        kj::throwFatalException(unreadable(kj::mv(exception)));
      });
}

kj::Exception LimitedMessageStream::tooLarge(uint64_t words) {
  return violation("unreadable message: Message is too large (" +
                   std::to_string(words * sizeof(capnp::word)) + " bytes; the limit is " +
                   std::to_string(readerOptions_.traversalLimitInWords * sizeof(capnp::word)) +
                   ")");
}

kj::Exception LimitedMessageStream::unreadable(kj::Exception&& exception) {
  // A vanished peer is not a violation; an unreadable message is.
  if (exception.getType() == kj::Exception::Type::DISCONNECTED) return kj::mv(exception);
  return violation(std::string("unreadable message: ") + exception.getDescription().cStr());
}

void LimitedMessageStream::countIncoming(capnp::MessageReader& reader) {
  KJ_IF_MAYBE (failure, checkIncoming(reader)) {
    kj::throwFatalException(kj::mv(*failure));
  }
}

kj::Maybe<kj::Exception> LimitedMessageStream::checkIncoming(capnp::MessageReader& reader) {
  capnp::rpc::Message::Which kind;
  kj::Maybe<capnp::rpc::Message::Which> plain;
  if (reader.getSegment(1) == nullptr) plain = plainMessageKind(reader.getSegment(0));
  KJ_IF_MAYBE (known, plain) {
    kind = *known;
  } else {
    try {
      kind = reader.getRoot<capnp::rpc::Message>().which();
    } catch (kj::Exception& exception) {
      return violation(std::string("unreadable message: ") + exception.getDescription().cStr());
    }
  }
  if (kind != capnp::rpc::Message::CALL && kind != capnp::rpc::Message::BOOTSTRAP) return nullptr;
  if (++callsInFlight_ > maxCallsInFlight_) {
    return violation("more than " + std::to_string(maxCallsInFlight_) +
                     " calls in flight (replies not read?)");
  }
  return nullptr;
}

void LimitedMessageStream::countOutgoing(
    kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) {
  // Our own message, so it is well formed: one segment (nearly every RPC message) holds no
  // far pointer, and its union tag is read without a reader or bounds checks.
  capnp::rpc::Message::Which kind;
  kj::Maybe<capnp::rpc::Message::Which> plain;
  if (segments.size() == 1) plain = plainMessageKind(segments[0]);
  KJ_IF_MAYBE (known, plain) {
    kind = *known;
  } else if (segments.size() == 1) {
    kind = capnp::readMessageUnchecked<capnp::rpc::Message>(segments[0].begin()).which();
  } else {
    kind = capnp::SegmentArrayMessageReader(segments).getRoot<capnp::rpc::Message>().which();
  }
  if (kind == capnp::rpc::Message::RETURN && callsInFlight_ > 0) --callsInFlight_;
}

kj::Promise<void> LimitedMessageStream::writeMessage(
    kj::ArrayPtr<const int> fds, kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) {
  countOutgoing(segments);
  return inner_.writeMessage(fds, segments);
}

template <typename Write>
bool LimitedMessageStream::framedOnStack(
    kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages, Write&& write) {
  // capnp's framing (serialize.h): per message, the segment count - 1 and each segment's size
  // in words, padded to a whole word, then the segments. The stream copies before it returns,
  // so the tables and the pieces need not outlive the call; a batch too big for these arrays
  // goes the general way.
  constexpr size_t kMaxTableWords = 64;
  constexpr size_t kMaxPieces = 128;
  size_t tableWords = 0;
  size_t pieceCount = 0;
  for (auto segments : messages) {
    if (segments.size() == 0) return false;  // capnp refuses it
    tableWords += (segments.size() + 2) / 2;
    pieceCount += segments.size() + 1;
  }
  if (tableWords > kMaxTableWords || pieceCount > kMaxPieces) return false;
  // Unions: only the entries filled are written (an ArrayPtr array would be zeroed first).
  union Table {
    Table() {}
    capnp::_::WireValue<uint32_t> entries[kMaxTableWords * 2];
  } table;
  union Pieces {
    Pieces() {}
    kj::ArrayPtr<const kj::byte> entries[kMaxPieces];
  } pieces;
  size_t entry = 0;
  size_t piece = 0;
  for (auto segments : messages) {
    size_t start = entry;
    table.entries[entry++].set(static_cast<uint32_t>(segments.size() - 1));
    for (auto segment : segments) {
      table.entries[entry++].set(static_cast<uint32_t>(segment.size()));
    }
    if (entry % 2 != 0) table.entries[entry++].set(0);
    pieces.entries[piece++] = kj::arrayPtr(table.entries + start, entry - start).asBytes();
    for (auto segment : segments) pieces.entries[piece++] = segment.asBytes();
  }
  write(kj::arrayPtr(pieces.entries, piece));
  return true;
}

kj::Promise<void> LimitedMessageStream::writeMessages(
    kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) {
  for (auto segments : messages) countOutgoing(segments);
  if (direct_ == nullptr) return inner_.writeMessages(messages);
  kj::Maybe<kj::Promise<void>> written;
  if (!framedOnStack(messages, [&](kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
        written = direct_->write(pieces);
      })) {
    return inner_.writeMessages(messages);
  }
  return KJ_ASSERT_NONNULL(kj::mv(written));
}

bool LimitedMessageStream::writeMessagesNow(
    kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) {
  if (direct_ == nullptr) return false;
  bool taken = false;
  if (!framedOnStack(messages, [&](kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
        taken = direct_->tryWriteNow(pieces);
      })) {
    return false;
  }
  if (taken) {
    for (auto segments : messages) countOutgoing(segments);
  }
  return taken;
}

}  // namespace switchboard::net
