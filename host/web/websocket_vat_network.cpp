#include "web/websocket_vat_network.h"

#include <kj/debug.h>

namespace switchboard::web {

// ------------------------------------------------------------------------------ aborter

// TwoPartyConnection never reads or writes through its transport; only abortRead() is asked.
kj::Promise<size_t> WebSocketVatNetwork::SocketAborter::tryRead(void*, size_t, size_t) {
  KJ_UNIMPLEMENTED("a WebSocket RPC connection reads through its message stream");
}

kj::Promise<void> WebSocketVatNetwork::SocketAborter::write(const void*, size_t) {
  KJ_UNIMPLEMENTED("a WebSocket RPC connection writes through its message stream");
}

kj::Promise<void> WebSocketVatNetwork::SocketAborter::write(
    kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>>) {
  KJ_UNIMPLEMENTED("a WebSocket RPC connection writes through its message stream");
}

kj::Promise<void> WebSocketVatNetwork::SocketAborter::whenWriteDisconnected() {
  return kj::NEVER_DONE;
}

void WebSocketVatNetwork::SocketAborter::shutdownWrite() {
  KJ_UNIMPLEMENTED("a WebSocket RPC connection ends through its message stream");
}

// ------------------------------------------------------------------------------ network

WebSocketVatNetwork::WebSocketVatNetwork(kj::WebSocket& socket, net::FinishFlush& flush)
    : messages_(socket), aborter_(socket), connection_(messages_, aborter_) {
  connection_.holdFinishesIn(flush);
  auto paf = kj::newPromiseAndFulfiller<void>();
  disconnected_ = paf.promise.fork();
  release_.disconnected = kj::mv(paf.fulfiller);
}

capnp::rpc::twoparty::VatId::Reader WebSocketVatNetwork::ToClient::getPeerVatId() {
  return vatIdOf(capnp::rpc::twoparty::Side::CLIENT);  // the peer is always the client vat
}

void WebSocketVatNetwork::ReleaseDisposer::disposeImpl(void*) const {
  disconnected->fulfill();
}

kj::Maybe<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> WebSocketVatNetwork::connect(
    capnp::rpc::twoparty::VatId::Reader hostId) {
  // As in TwoPartyVatNetwork: our own side is "ourselves" (null); the server end does not
  // connect out.
  if (hostId.getSide() == capnp::rpc::twoparty::Side::SERVER) return nullptr;
  KJ_FAIL_REQUIRE("the server end of a WebSocket does not connect out");
}

kj::Promise<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> WebSocketVatNetwork::accept() {
  if (accepted_) return kj::NEVER_DONE;
  accepted_ = true;
  return kj::Own<capnp::TwoPartyVatNetworkBase::Connection>(&connection_, release_);
}

}  // namespace switchboard::web
