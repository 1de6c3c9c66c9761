#include "net/server_vat_network.h"

#include <capnp/rpc.capnp.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <utility>

namespace switchboard::net {

// ----------------------------------------------------------------------------- messages

// A message the RPC system builds and sends. Refcounted because the RPC system may keep it
// after send() (and after the connection is gone); only send() touches the connection.
class ServedConnection::OutgoingMessage final : public capnp::OutgoingRpcMessage,
                                                public kj::Refcounted {
 public:
  OutgoingMessage(ServedConnection& connection, uint firstSegmentWords)
      : connection_(connection),
        message_(firstSegmentWords == 0 ? capnp::SUGGESTED_FIRST_SEGMENT_WORDS
                                        : firstSegmentWords) {}

  capnp::AnyPointer::Builder getBody() override { return message_.getRoot<capnp::AnyPointer>(); }
  void send() override { connection_.send(kj::addRef(*this)); }
  bool isFinish() {
    return message_.getRoot<capnp::rpc::Message>().which() == capnp::rpc::Message::FINISH;
  }
  size_t sizeInWords() override { return message_.sizeInWords(); }
  kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments() {
    return message_.getSegmentsForOutput();
  }

 private:
  ServedConnection& connection_;
  capnp::MallocMessageBuilder message_;
};

class ServedConnection::IncomingMessage final : public capnp::IncomingRpcMessage {
 public:
  explicit IncomingMessage(kj::Own<capnp::MessageReader> message) : message_(kj::mv(message)) {}
  capnp::AnyPointer::Reader getBody() override { return message_->getRoot<capnp::AnyPointer>(); }
  size_t sizeInWords() override { return message_->sizeInWords(); }

 private:
  kj::Own<capnp::MessageReader> message_;
};

// --------------------------------------------------------------------------- connection

ServedConnection::ServedConnection(capnp::MessageStream& messages, kj::AsyncIoStream& transport,
                                   int fd, capnp::Capability::Client bootstrap,
                                   std::function<void()> onEnded)
    : messages_(messages),
      transport_(transport),
      fd_(fd),
      bootstrap_(kj::mv(bootstrap)),
      onEnded_(std::move(onEnded)) {}

ServedConnection::~ServedConnection() noexcept(false) {
  if (finishesHeld_) network_->forgetHeld(*this);
  KJ_ASSERT(!held_, "a connection destroyed while the RPC system holds it");
}

void ServedConnection::EndedDisposer::disposeImpl(void*) const {
  if (!connection_.held_) return;
  connection_.held_ = false;
  if (connection_.onEnded_) connection_.onEnded_();
}

kj::Own<capnp::TwoPartyVatNetworkBase::Connection> ServedConnection::handOver() {
  held_ = true;
  return kj::Own<capnp::TwoPartyVatNetworkBase::Connection>(this, endedDisposer_);
}

void ServedConnection::cut() {
  if (cut_) return;
  cut_ = true;
  ::shutdown(fd_, SHUT_RDWR);
  queueWritten();  // nothing more goes out: a shutdown() waiting for the queue goes on
}

kj::Own<capnp::RpcFlowController> ServedConnection::newStream() {
  return capnp::RpcFlowController::newVariableWindowController(*this);
}

size_t ServedConnection::getWindow() {
  KJ_IF_MAYBE (size, messages_.getSendBufferSize()) {
    return static_cast<size_t>(*size);
  }
  return capnp::RpcFlowController::DEFAULT_WINDOW_SIZE;
}

capnp::rpc::twoparty::VatId::Reader ServedConnection::getPeerVatId() {
  if (network_ != nullptr) network_->asking_ = this;
  // The peer is always the client vat. Built once per process; only ever read.
  static const capnp::rpc::twoparty::VatId::Reader client = [] {
    static capnp::MallocMessageBuilder builder(4);
    auto id = builder.initRoot<capnp::rpc::twoparty::VatId>();
    id.setSide(capnp::rpc::twoparty::Side::CLIENT);
    return id.asReader();
  }();
  return client;
}

kj::Own<capnp::OutgoingRpcMessage> ServedConnection::newOutgoingMessage(uint firstSegmentWordSize) {
  return kj::refcounted<OutgoingMessage>(*this, firstSegmentWordSize);
}

kj::Promise<kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>>
ServedConnection::receiveIncomingMessage() {
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

void ServedConnection::send(kj::Own<OutgoingMessage> message) {
  if (writeFailed_ || shuttingDown_ || cut_) return;
  bool finish = message->isFinish();
  outbox_.add(kj::mv(message));
  if (writing_) return;
  if (finish && network_ != nullptr) {
    network_->holdFinishes(*this);  // out with the next message, or at the flush
    return;
  }
  writeQueued();
}

void ServedConnection::flushFinishes() {
  finishesHeld_ = false;
  if (!writing_ && !writeFailed_ && !cut_ && outbox_.size() > 0) writeQueued();
}

void ServedConnection::writeQueued() {
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
                        if (outbox_.size() > 0 && !cut_) {
                          writeQueued();
                        } else {
                          queueWritten();
                        }
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

void ServedConnection::queueWritten() {
  KJ_IF_MAYBE (waiting, written_) {
    (*waiting)->fulfill();
    written_ = nullptr;
  }
}

kj::Promise<void> ServedConnection::shutdown() {
  // The RPC system sends its Abort and then shuts down: the queue (Abort included) goes out
  // first, then the sending side ends. A cut connection has no sending side left.
  shuttingDown_ = true;
  if (cut_) return kj::READY_NOW;
  kj::Promise<void> queueDone = kj::READY_NOW;
  if (writing_) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    written_ = kj::mv(paf.fulfiller);
    queueDone = kj::mv(paf.promise);
  }
  return queueDone.then([this]() -> kj::Promise<void> {
    if (cut_) return kj::READY_NOW;
    return messages_.end();
  });
}

void ServedConnection::taskFailed(kj::Exception&& exception) {
  spdlog::debug("RPC write task failed: {}", exception.getDescription().cStr());
}

// ------------------------------------------------------------------------------ network

ServerVatNetwork::~ServerVatNetwork() noexcept(false) {
  // Connections may outlive the network (the RPC system and its network go first).
  for (ServedConnection* connection : holding_) connection->finishesHeld_ = false;
}

void ServerVatNetwork::holdFinishes(ServedConnection& connection) {
  if (connection.finishesHeld_) return;
  connection.finishesHeld_ = true;
  holding_.push_back(&connection);
  if (flushArmed_) return;
  flushArmed_ = true;
  flushes_.add(timer_.afterDelay(kFinishDelay).then([this]() {
    flushArmed_ = false;
    std::vector<ServedConnection*> due;
    due.swap(holding_);
    for (ServedConnection* connection : due) connection->flushFinishes();
  }));
}

void ServerVatNetwork::forgetHeld(ServedConnection& connection) {
  connection.finishesHeld_ = false;
  std::erase(holding_, &connection);
}

void ServerVatNetwork::taskFailed(kj::Exception&& exception) {
  spdlog::warn("RPC network: flushing held Finishes failed: {}", exception.getDescription().cStr());
}

void ServerVatNetwork::add(ServedConnection& connection) {
  connection.network_ = this;
  KJ_IF_MAYBE (acceptor, acceptor_) {
    auto fulfiller = kj::mv(*acceptor);
    acceptor_ = nullptr;
    fulfiller->fulfill(connection.handOver());
    return;
  }
  waiting_.push_back(&connection);
}

void ServerVatNetwork::forget(ServedConnection& connection) {
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
    if (*it != &connection) continue;
    waiting_.erase(it);
    return;
  }
}

kj::Maybe<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> ServerVatNetwork::connect(
    capnp::rpc::twoparty::VatId::Reader hostId) {
  // Only the RPC system's bootstrap()/restore() of a remote vat call this; the server end
  // never does. As in TwoPartyVatNetwork: our own side is "ourselves" (null).
  if (hostId.getSide() == capnp::rpc::twoparty::Side::SERVER) return nullptr;
  KJ_FAIL_REQUIRE("the server end of a connection does not connect out");
}

kj::Promise<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> ServerVatNetwork::accept() {
  if (!waiting_.empty()) {
    ServedConnection& next = *waiting_.front();
    waiting_.pop_front();
    return next.handOver();
  }
  auto paf = kj::newPromiseAndFulfiller<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>>();
  acceptor_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

capnp::Capability::Client ServerVatNetwork::createFor(capnp::rpc::twoparty::VatId::Reader) {
  ServedConnection* asking = std::exchange(asking_, nullptr);
  KJ_REQUIRE(asking != nullptr, "a bootstrap asked for without its connection's VatId");
  return asking->bootstrap_;
}

}  // namespace switchboard::net
