#include "net/server_vat_network.h"

#include <kj/debug.h>
#include <sys/socket.h>

#include <utility>

namespace switchboard::net {

// --------------------------------------------------------------------------- connection

ServedConnection::ServedConnection(capnp::MessageStream& messages, kj::AsyncIoStream& transport,
                                   int fd, capnp::Capability::Client bootstrap,
                                   BootstrapSource* more, std::function<void()> onEnded)
    : TwoPartyConnection(messages, transport),
      fd_(fd),
      bootstrap_(kj::mv(bootstrap)),
      more_(more),
      onEnded_(std::move(onEnded)) {}

ServedConnection::~ServedConnection() noexcept(false) {
  KJ_ASSERT(!rpcHolds_, "a connection destroyed while the RPC system holds it");
}

void ServedConnection::EndedDisposer::disposeImpl(void*) const {
  if (!connection_.rpcHolds_) return;
  connection_.rpcHolds_ = false;
  if (connection_.onEnded_) connection_.onEnded_();
}

kj::Own<capnp::TwoPartyVatNetworkBase::Connection> ServedConnection::handOver() {
  rpcHolds_ = true;
  return kj::Own<capnp::TwoPartyVatNetworkBase::Connection>(this, endedDisposer_);
}

capnp::Capability::Client ServedConnection::nextBootstrap() {
  KJ_IF_MAYBE (first, bootstrap_) {
    if (more_ == nullptr) return *first;
    capnp::Capability::Client taken = kj::mv(*first);
    bootstrap_ = nullptr;
    return taken;
  }
  return KJ_ASSERT_NONNULL(more_).nextBootstrap();
}

void ServedConnection::cut() {
  if (cut_) return;
  cut_ = true;
  ::shutdown(fd_, SHUT_RDWR);
  stopWriting();
}

capnp::rpc::twoparty::VatId::Reader ServedConnection::getPeerVatId() {
  if (network_ != nullptr) network_->asking_ = this;
  return vatIdOf(capnp::rpc::twoparty::Side::CLIENT);  // the peer is always the client vat
}

// ------------------------------------------------------------------------------ network

void ServerVatNetwork::add(ServedConnection& connection) {
  connection.network_ = this;
  connection.holdFinishesIn(finishFlush_);
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
  return asking->nextBootstrap();
}

}  // namespace switchboard::net
