#include "net/server_vat_network.h"

#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <utility>

namespace switchboard::net {

// ----------------------------------------------------------------------------- messages

// A message the RPC system builds and sends. Refcounted because the RPC system may keep it
// after send() (and after the network is gone); only send() touches the network.
class ServerVatNetwork::OutgoingMessage final : public capnp::OutgoingRpcMessage,
                                                public kj::Refcounted {
 public:
  OutgoingMessage(ServerVatNetwork& network, uint firstSegmentWords)
      : network_(network),
        message_(firstSegmentWords == 0 ? capnp::SUGGESTED_FIRST_SEGMENT_WORDS
                                        : firstSegmentWords) {}

  capnp::AnyPointer::Builder getBody() override { return message_.getRoot<capnp::AnyPointer>(); }
  void send() override { network_.send(kj::addRef(*this)); }
  size_t sizeInWords() override { return message_.sizeInWords(); }
  kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments() {
    return message_.getSegmentsForOutput();
  }

 private:
  ServerVatNetwork& network_;
  capnp::MallocMessageBuilder message_;
};

class ServerVatNetwork::IncomingMessage final : public capnp::IncomingRpcMessage {
 public:
  explicit IncomingMessage(kj::Own<capnp::MessageReader> message) : message_(kj::mv(message)) {}
  capnp::AnyPointer::Reader getBody() override { return message_->getRoot<capnp::AnyPointer>(); }
  size_t sizeInWords() override { return message_->sizeInWords(); }

 private:
  kj::Own<capnp::MessageReader> message_;
};

void ServerVatNetwork::EndedDisposer::disposeImpl(void*) const {
  if (network_.ended_) return;
  network_.ended_ = true;
  if (network_.onEnded_) network_.onEnded_();
}

// ------------------------------------------------------------------------------ network

ServerVatNetwork::ServerVatNetwork(capnp::MessageStream& messages, kj::AsyncIoStream& transport,
                                   std::function<void()> onEnded)
    : messages_(messages), transport_(transport), onEnded_(std::move(onEnded)) {}

ServerVatNetwork::~ServerVatNetwork() noexcept(false) = default;

kj::Maybe<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> ServerVatNetwork::connect(
    capnp::rpc::twoparty::VatId::Reader hostId) {
  // Only the RPC system's bootstrap()/restore() of a remote vat call this; the server end
  // never does. As in TwoPartyVatNetwork: our own side is "ourselves" (null).
  if (hostId.getSide() == capnp::rpc::twoparty::Side::SERVER) return nullptr;
  KJ_FAIL_REQUIRE("the server end of a connection does not connect out");
}

kj::Promise<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> ServerVatNetwork::accept() {
  if (accepted_) return kj::NEVER_DONE;  // a node with no exception slot
  accepted_ = true;
  return kj::Own<capnp::TwoPartyVatNetworkBase::Connection>(this, endedDisposer_);
}

kj::Own<capnp::RpcFlowController> ServerVatNetwork::newStream() {
  return capnp::RpcFlowController::newVariableWindowController(*this);
}

size_t ServerVatNetwork::getWindow() {
  KJ_IF_MAYBE (size, messages_.getSendBufferSize()) {
    return static_cast<size_t>(*size);
  }
  return capnp::RpcFlowController::DEFAULT_WINDOW_SIZE;
}

capnp::rpc::twoparty::VatId::Reader ServerVatNetwork::getPeerVatId() {
  // The peer is always the client vat. Built once per process; only ever read.
  static const capnp::rpc::twoparty::VatId::Reader client = [] {
    static capnp::MallocMessageBuilder builder(4);
    auto id = builder.initRoot<capnp::rpc::twoparty::VatId>();
    id.setSide(capnp::rpc::twoparty::Side::CLIENT);
    return id.asReader();
  }();
  return client;
}

kj::Own<capnp::OutgoingRpcMessage> ServerVatNetwork::newOutgoingMessage(uint firstSegmentWordSize) {
  return kj::refcounted<OutgoingMessage>(*this, firstSegmentWordSize);
}

kj::Promise<kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>>
ServerVatNetwork::receiveIncomingMessage() {
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

// ------------------------------------------------------------------------------ writing

void ServerVatNetwork::send(kj::Own<OutgoingMessage> message) {
  if (writeFailed_ || shuttingDown_) return;
  outbox_.add(kj::mv(message));
  if (!writing_) writeQueued();
}

void ServerVatNetwork::writeQueued() {
  writing_ = true;
  auto batch = kj::heapArray<kj::Own<OutgoingMessage>>(outbox_.size());
  for (size_t i = 0; i < batch.size(); ++i) batch[i] = kj::mv(outbox_[i]);
  outbox_ = kj::Vector<kj::Own<OutgoingMessage>>();  // holds nothing while idle
  auto segments = kj::heapArray<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>>(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) segments[i] = batch[i]->segments();
  kj::Promise<void> written = kj::evalNow([&] { return messages_.writeMessages(segments); });
  writes_.add(written.attach(kj::mv(segments), kj::mv(batch))
                  .then(
                      [this]() -> kj::Promise<void> {
                        writing_ = false;
                        if (outbox_.size() > 0) {
                          writeQueued();
                        } else {
                          KJ_IF_MAYBE (waiting, written_) {
                            (*waiting)->fulfill();
                            written_ = nullptr;
                          }
                        }
                        return kj::READY_NOW;
                      },
                      [this](kj::Exception&& exception) -> kj::Promise<void> {
                        // Nobody waits on a write: make the connection end through its read.
                        writing_ = false;
                        writeFailed_ = true;
                        outbox_.clear();
                        spdlog::debug("RPC write failed: {}", exception.getDescription().cStr());
                        transport_.abortRead();
                        KJ_IF_MAYBE (waiting, written_) {
                          (*waiting)->fulfill();
                          written_ = nullptr;
                        }
                        return kj::READY_NOW;
                      }));
}

kj::Promise<void> ServerVatNetwork::shutdown() {
  // The RPC system sends its Abort and then shuts down: the queue (Abort included) goes out
  // first, then the sending side ends.
  kj::Promise<void> queueWritten = kj::READY_NOW;
  if (writing_) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    written_ = kj::mv(paf.fulfiller);
    queueWritten = kj::mv(paf.promise);
  }
  shuttingDown_ = true;
  return queueWritten.then([this]() { return messages_.end(); });
}

void ServerVatNetwork::taskFailed(kj::Exception&& exception) {
  spdlog::debug("RPC write task failed: {}", exception.getDescription().cStr());
}

}  // namespace switchboard::net
