#include "net/client_vat_network.h"

#include <capnp/message.h>
#include <spdlog/spdlog.h>

namespace switchboard::net {

// ------------------------------------------------------------------------------ network

ClientVatNetwork::ClientVatNetwork(kj::AsyncIoStream& stream, kj::Timer& timer,
                                   kj::Duration finishDelay, const ConnectionLimits& limits)
    : messages_(stream, limits,
                [](const std::string& reason) {
                  // The read fails with the reason too: the RPC system ends the connection.
                  spdlog::warn("RPC: the server broke this client's limits: {}", reason);
                }),
      finishFlush_(timer, finishDelay),
      connection_(messages_, stream) {
  connection_.holdFinishesIn(finishFlush_);
  auto paf = kj::newPromiseAndFulfiller<void>();
  disconnected_ = paf.promise.fork();
  releases_.disconnected = kj::mv(paf.fulfiller);
}

capnp::rpc::twoparty::VatId::Reader ClientVatNetwork::ToServer::getPeerVatId() {
  return vatIdOf(capnp::rpc::twoparty::Side::SERVER);  // the peer is always the server vat
}

void ClientVatNetwork::ReleaseCounter::disposeImpl(void*) const {
  if (--references == 0) disconnected->fulfill();
}

kj::Maybe<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> ClientVatNetwork::connect(
    capnp::rpc::twoparty::VatId::Reader hostId) {
  // As in TwoPartyVatNetwork: our own side is "ourselves" (null), the other is the connection.
  if (hostId.getSide() == capnp::rpc::twoparty::Side::CLIENT) return nullptr;
  ++releases_.references;
  return kj::Own<capnp::TwoPartyVatNetworkBase::Connection>(&connection_, releases_);
}

kj::Promise<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> ClientVatNetwork::accept() {
  auto paf = kj::newPromiseAndFulfiller<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>>();
  acceptor_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

// ------------------------------------------------------------------------------- client

TwoPartyRpcClient::TwoPartyRpcClient(kj::AsyncIoStream& stream, kj::Timer& timer,
                                     kj::Duration finishDelay, const ConnectionLimits& limits)
    : network_(stream, timer, finishDelay, limits), rpcSystem_(capnp::makeRpcClient(network_)) {
  rpcSystem_.setFlowLimit(limits.callFlowLimitBytes / sizeof(capnp::word));
}

capnp::Capability::Client TwoPartyRpcClient::bootstrap() {
  capnp::MallocMessageBuilder message(4);
  auto server = message.initRoot<capnp::rpc::twoparty::VatId>();
  server.setSide(capnp::rpc::twoparty::Side::SERVER);
  return rpcSystem_.bootstrap(server);
}

}  // namespace switchboard::net
