#include "net/connection_limits.h"

#include <capnp/rpc.capnp.h>
#include <kj/debug.h>

namespace switchboard::net {

LimitedMessageStream::LimitedMessageStream(kj::AsyncIoStream& stream,
                                           const ConnectionLimits& limits,
                                           ViolationHandler onViolation)
    : inner_(stream),
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

kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> LimitedMessageStream::tryReadMessage(
    kj::ArrayPtr<kj::AutoCloseFd> fdSpace, capnp::ReaderOptions,
    kj::ArrayPtr<capnp::word> scratchSpace) {
  // The caller's options (the vat network's, capnp's defaults) are replaced by ours: the vat
  // network also checks what it *sends* against its own options, and the server's deliveries
  // are larger than anything a peer needs to send.
  if (violated_) return violation("connection already over its limits");
  return inner_.tryReadMessage(fdSpace, readerOptions_, scratchSpace)
      .then(
          [this](kj::Maybe<capnp::MessageReaderAndFds>&& message)
              -> kj::Maybe<capnp::MessageReaderAndFds> {
            KJ_IF_MAYBE (read, message) {
              countIncoming(*read->reader);
            }
            return kj::mv(message);
          },
          [this](kj::Exception&& exception) -> kj::Maybe<capnp::MessageReaderAndFds> {
            // A vanished peer is not a violation; an unreadable message is.
            if (exception.getType() == kj::Exception::Type::DISCONNECTED) {
              kj::throwFatalException(kj::mv(exception));
            }
            kj::throwFatalException(
                violation(std::string("unreadable message: ") + exception.getDescription().cStr()));
          });
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
