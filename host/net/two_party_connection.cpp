#include "net/two_party_connection.h"

#include <capnp/message.h>
#include <capnp/rpc.capnp.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>

namespace switchboard::net {

kj::Maybe<capnp::rpc::Message::Which> plainMessageKind(kj::ArrayPtr<const capnp::word> segment) {
  if (segment.size() == 0) return nullptr;
  auto* root = reinterpret_cast<const capnp::_::WireValue<uint32_t>*>(segment.begin());
  uint32_t offsetAndKind = root[0].get();
  if ((offsetAndKind & 3) != 0) return nullptr;  // not a struct pointer
  int64_t start = 1 + (static_cast<int32_t>(offsetAndKind) >> 2);
  uint32_t sizes = root[1].get();
  uint64_t dataWords = sizes & 0xffff;
  uint64_t pointers = sizes >> 16;
  if (start < 1 || static_cast<uint64_t>(start) + dataWords + pointers > segment.size()) {
    return nullptr;
  }
  if (dataWords == 0) return capnp::rpc::Message::UNIMPLEMENTED;  // the tag's default, 0
  auto* tag = reinterpret_cast<const capnp::_::WireValue<uint16_t>*>(segment.begin() + start);
  return static_cast<capnp::rpc::Message::Which>(tag->get());
}

// ----------------------------------------------------------------------------- messages

// A message the RPC system builds and sends. Counted references because the RPC system may
// keep it after send() (and after the connection is gone); only send() touches the connection.
// Its first segment (the size the RPC system asks for, capnp's default when it gives none) is
// in the same allocation, right after the object, so a message of one segment (nearly all)
// costs one allocation, not two.
class TwoPartyConnection::OutgoingMessage final : public capnp::OutgoingRpcMessage,
                                                  private kj::Disposer {
 public:
  static kj::Own<OutgoingMessage> make(TwoPartyConnection& connection,
                                       capnp::uint firstSegmentWords) {
    static_assert(sizeof(OutgoingMessage) % sizeof(capnp::word) == 0, "the words are aligned");
    size_t words =
        firstSegmentWords == 0 ? capnp::SUGGESTED_FIRST_SEGMENT_WORDS : firstSegmentWords;
    void* block = ::operator new(sizeof(OutgoingMessage) + words * sizeof(capnp::word));
    auto* first =
        reinterpret_cast<capnp::word*>(static_cast<kj::byte*>(block) + sizeof(OutgoingMessage));
    std::memset(first, 0, words * sizeof(capnp::word));  // MallocMessageBuilder's requirement
    return (new (block) OutgoingMessage(connection, kj::arrayPtr(first, words)))->addRef();
  }

  kj::Own<OutgoingMessage> addRef() {
    ++references_;
    return kj::Own<OutgoingMessage>(this, *this);
  }

  capnp::AnyPointer::Builder getBody() override { return message_.getRoot<capnp::AnyPointer>(); }
  void send() override { connection_.send(addRef()); }
  bool isFinish() {
    // The root pointer is the first word of the first segment, which is ours.
    KJ_IF_MAYBE (kind, plainMessageKind(firstSegment_)) {
      return *kind == capnp::rpc::Message::FINISH;
    }
    return message_.getRoot<capnp::rpc::Message>().which() == capnp::rpc::Message::FINISH;
  }
  size_t sizeInWords() override { return message_.sizeInWords(); }
  kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments() {
    return message_.getSegmentsForOutput();
  }

 private:
  OutgoingMessage(TwoPartyConnection& connection, kj::ArrayPtr<capnp::word> firstSegment)
      : connection_(connection), firstSegment_(firstSegment), message_(firstSegment) {}

  void disposeImpl(void*) const override {
    if (--references_ > 0) return;
    auto* self = const_cast<OutgoingMessage*>(this);
    self->~OutgoingMessage();
    ::operator delete(self);
  }

  TwoPartyConnection& connection_;
  mutable unsigned references_ = 0;
  kj::ArrayPtr<const capnp::word> firstSegment_;  // right after this object
  capnp::MallocMessageBuilder message_;
};
class TwoPartyConnection::IncomingMessage final : public capnp::IncomingRpcMessage {
 public:
  explicit IncomingMessage(kj::Own<capnp::MessageReader> message) : message_(kj::mv(message)) {}
  capnp::AnyPointer::Reader getBody() override { return message_->getRoot<capnp::AnyPointer>(); }
  size_t sizeInWords() override { return message_->sizeInWords(); }

 private:
  kj::Own<capnp::MessageReader> message_;
};

// --------------------------------------------------------------------------- connection

capnp::rpc::twoparty::VatId::Reader TwoPartyConnection::vatIdOf(capnp::rpc::twoparty::Side side) {
  using capnp::rpc::twoparty::Side;
  auto build = [](capnp::MallocMessageBuilder& builder, Side side) {
    auto id = builder.initRoot<capnp::rpc::twoparty::VatId>();
    id.setSide(side);
    return id.asReader();
  };
  static capnp::MallocMessageBuilder serverBuilder(4);
  static capnp::MallocMessageBuilder clientBuilder(4);
  static const auto server = build(serverBuilder, Side::SERVER);
  static const auto client = build(clientBuilder, Side::CLIENT);
  return side == Side::SERVER ? server : client;
}

TwoPartyConnection::TwoPartyConnection(capnp::MessageStream& messages, kj::AsyncIoStream& transport)
    : messages_(messages),
      immediate_(dynamic_cast<ImmediateMessageStream*>(&messages)),
      transport_(transport) {}

TwoPartyConnection::~TwoPartyConnection() noexcept(false) {
  if (listedIn_ != 0 && flush_ != nullptr) flush_->forget(*this);
}

void TwoPartyConnection::holdFinishesIn(FinishFlush& flush) {
  flush_ = &flush;
}

kj::Own<capnp::RpcFlowController> TwoPartyConnection::newStream() {
  return capnp::RpcFlowController::newVariableWindowController(*this);
}

size_t TwoPartyConnection::getWindow() {
  KJ_IF_MAYBE (size, messages_.getSendBufferSize()) {
    return static_cast<size_t>(*size);
  }
  return capnp::RpcFlowController::DEFAULT_WINDOW_SIZE;
}

kj::Own<capnp::OutgoingRpcMessage> TwoPartyConnection::newOutgoingMessage(
    capnp::uint firstSegmentWordSize) {
  return OutgoingMessage::make(*this, firstSegmentWordSize);
}

kj::Promise<kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>>
TwoPartyConnection::receiveIncomingMessage() {
  if (immediate_ != nullptr) {
    KJ_IF_MAYBE (taken, immediate_->takeWholeMessage()) {
      return kj::mv(*taken);
    }
    KJ_IF_MAYBE (next, immediate_->nextMessageWhenReadable(*this)) {
      return kj::mv(*next);
    }
  }
  return messages_.tryReadMessage(nullptr, capnp::ReaderOptions())
      .then([](kj::Maybe<capnp::MessageReaderAndFds>&& read)
                -> kj::Maybe<kj::Own<capnp::IncomingRpcMessage>> {
        KJ_IF_MAYBE (message, read) {
          return kj::Own<capnp::IncomingRpcMessage>(
              kj::heap<IncomingMessage>(kj::mv(message->reader)));
        }
        return nullptr;
      });
}

void TwoPartyConnection::send(kj::Own<OutgoingMessage> message) {
  if (writeFailed_ || shuttingDown_ || stopped_) return;
  bool finish = message->isFinish();
  if (!finish && outbox_.size() == 0 && !writing_ && immediate_ != nullptr) {
    // Alone and urgent: out at once, without a place in the queue.
    auto segments = message->segments();
    if (immediate_->writeMessagesNow(kj::arrayPtr(&segments, 1))) return;
  }
  if (!finish) urgent_ = true;
  outbox_.add(kj::mv(message));
  writeOrHold();
}

void TwoPartyConnection::writeOrHold() {
  if (writing_) return;  // the write's completion comes back here
  if (stopped_ || writeFailed_ || outbox_.size() == 0) {
    queueWritten();
    return;
  }
  if (urgent_ || shuttingDown_ || flush_ == nullptr) {
    writeQueued();
    return;
  }
  // Only Finishes: out with the next message, or at the flush.
  if (heldIn_ == 0) flush_->hold(*this);
}

void TwoPartyConnection::flushHeld() {
  heldIn_ = 0;
  if (outbox_.size() == 0) return;  // a later message took them
  urgent_ = true;
  writeOrHold();
}

void TwoPartyConnection::writeQueued() {
  urgent_ = false;
  heldIn_ = 0;  // held Finishes go now
  constexpr size_t kBatchOnStack = 16;
  if (immediate_ != nullptr && outbox_.size() <= kBatchOnStack) {
    kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments[kBatchOnStack];
    for (size_t i = 0; i < outbox_.size(); ++i) segments[i] = outbox_[i]->segments();
    if (immediate_->writeMessagesNow(kj::arrayPtr(segments, outbox_.size()))) {
      outbox_ = kj::Vector<kj::Own<OutgoingMessage>>();  // holds nothing while idle
      queueWritten();
      return;
    }
  }
  writing_ = true;
  auto batch = kj::heapArray<kj::Own<OutgoingMessage>>(outbox_.size());
  for (size_t i = 0; i < batch.size(); ++i) batch[i] = kj::mv(outbox_[i]);
  outbox_ = kj::Vector<kj::Own<OutgoingMessage>>();  // holds nothing while idle
  auto segments = kj::heapArray<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>>(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) segments[i] = batch[i]->segments();
  kj::Promise<void> written = kj::evalNow([&] { return messages_.writeMessages(segments); });
  writes_.add(written.attach(kj::mv(segments), kj::mv(batch))
                  .then(
                      [this]() {
                        writing_ = false;
                        writeOrHold();
                      },
                      [this](kj::Exception&& exception) {
                        // Nobody waits on a write: make the connection end through its read.
                        writing_ = false;
                        writeFailed_ = true;
                        outbox_.clear();
                        spdlog::debug("RPC write failed: {}", exception.getDescription().cStr());
                        transport_.abortRead();
                        queueWritten();
                      }));
}

void TwoPartyConnection::queueWritten() {
  KJ_IF_MAYBE (waiting, written_) {
    (*waiting)->fulfill();
    written_ = nullptr;
  }
}

void TwoPartyConnection::stopWriting() {
  if (stopped_) return;
  stopped_ = true;
  outbox_.clear();
  queueWritten();  // nothing more goes out: a shutdown() waiting for the queue goes on
}

kj::Promise<void> TwoPartyConnection::shutdown() {
  // The RPC system sends its Abort and then shuts down: the queue (held Finishes and the
  // Abort) goes out first, then the sending side ends. A stopped connection has no sending
  // side left.
  shuttingDown_ = true;
  if (stopped_) return kj::READY_NOW;
  writeOrHold();
  kj::Promise<void> queueDone = kj::READY_NOW;
  if (writing_) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    written_ = kj::mv(paf.fulfiller);
    queueDone = kj::mv(paf.promise);
  }
  return queueDone.then([this]() -> kj::Promise<void> {
    if (stopped_) return kj::READY_NOW;
    return messages_.end();
  });
}

void TwoPartyConnection::taskFailed(kj::Exception&& exception) {
  spdlog::debug("RPC write task failed: {}", exception.getDescription().cStr());
}

// -------------------------------------------------------------------------------- flush

FinishFlush::~FinishFlush() noexcept(false) {
  for (auto* list : {&current_, &previous_}) {
    for (TwoPartyConnection* connection : *list) {
      connection->heldIn_ = 0;
      connection->listedIn_ = 0;
      connection->flush_ = nullptr;
    }
  }
}

void FinishFlush::hold(TwoPartyConnection& connection) {
  connection.heldIn_ = generation_;
  if (connection.listedIn_ != generation_) {
    connection.listedIn_ = generation_;
    current_.push_back(&connection);
  }
  if (armed_) return;
  armed_ = true;
  flushes_.add(timer_.afterDelay(tick_).then([this]() { tick(); }));
}

void FinishFlush::tick() {
  armed_ = false;
  ++generation_;
  std::vector<TwoPartyConnection*> due = std::move(previous_);
  previous_ = std::move(current_);
  current_ = {};
  for (TwoPartyConnection* connection : due) {
    // Listed two generations ago; its Finishes are due if they have waited since then (or
    // longer), not if a write took them and a later hold listed it again.
    if (connection->listedIn_ + 2 == generation_) connection->listedIn_ = 0;
    if (connection->heldIn_ != 0 && connection->heldIn_ + 2 <= generation_) {
      connection->flushHeld();
    }
  }
  if (!previous_.empty()) {
    armed_ = true;
    flushes_.add(timer_.afterDelay(tick_).then([this]() { tick(); }));
  }
}

void FinishFlush::forget(TwoPartyConnection& connection) {
  connection.heldIn_ = 0;
  connection.listedIn_ = 0;
  std::erase(current_, &connection);
  std::erase(previous_, &connection);
}

void FinishFlush::taskFailed(kj::Exception&& exception) {
  spdlog::warn("RPC: flushing held Finishes failed: {}", exception.getDescription().cStr());
}

}  // namespace switchboard::net
