#include "net/connection_limits.h"

#include <capnp/rpc.capnp.h>
#include <kj/debug.h>

#include <string>
#include <vector>

namespace switchboard::net {

LimitedMessageStream::LimitedMessageStream(kj::AsyncIoStream& stream,
                                           const ConnectionLimits& limits,
                                           ViolationHandler onViolation)
    : stream_(stream),
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

// A message read off the stream: its words in one array, and where each segment starts.
namespace {
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

kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> LimitedMessageStream::readAfterFirstWord() {
  uint32_t segmentCount = firstWord_[0].get() + 1;
  if (firstWord_[0].get() >= kMaxSegments) {
    return violation("unreadable message: Message has too many segments (" +
                     std::to_string(firstWord_[0].get()) + " + 1)");
  }
  if (segmentCount == 1) {
    uint32_t size = firstWord_[1].get();
    if (size > readerOptions_.traversalLimitInWords) return tooLarge(size);
    uint32_t sizes[1] = {size};
    return readSegments(sizes);
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
        auto message = kj::heap<ReadMessage>(kj::mv(read), readerOptions_);
        countIncoming(*message);
        return capnp::MessageReaderAndFds{kj::mv(message), nullptr};
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
  capnp::rpc::Message::Which kind;
  try {
    kind = reader.getRoot<capnp::rpc::Message>().which();
  } catch (kj::Exception& exception) {
    kj::throwFatalException(
        violation(std::string("unreadable message: ") + exception.getDescription().cStr()));
  }
  if (kind != capnp::rpc::Message::CALL && kind != capnp::rpc::Message::BOOTSTRAP) return;
  if (++callsInFlight_ > maxCallsInFlight_) {
    kj::throwFatalException(violation("more than " + std::to_string(maxCallsInFlight_) +
                                      " calls in flight (replies not read?)"));
  }
}

void LimitedMessageStream::countOutgoing(
    kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) {
  // Our own message, so it is well formed; reading its union tag is cheap.
  capnp::SegmentArrayMessageReader reader(segments);
  if (reader.getRoot<capnp::rpc::Message>().which() == capnp::rpc::Message::RETURN &&
      callsInFlight_ > 0) {
    --callsInFlight_;
  }
}

kj::Promise<void> LimitedMessageStream::writeMessage(
    kj::ArrayPtr<const int> fds, kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) {
  countOutgoing(segments);
  return inner_.writeMessage(fds, segments);
}

kj::Promise<void> LimitedMessageStream::writeMessages(
    kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) {
  for (auto segments : messages) countOutgoing(segments);
  return inner_.writeMessages(messages);
}

}  // namespace switchboard::net
