// The server end of one phone's Cap'n Proto RPC over a WebSocket, as the VatNetwork of that
// connection's own RpcSystem, holding Finishes as the TCP phone port does.
#pragma once

#include "net/two_party_connection.h"

#include <capnp/compat/websocket-rpc.h>
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/compat/http.h>

namespace switchboard::web {

// What capnp::TwoPartyVatNetwork(stream, Side::SERVER) is to its RpcSystem, over one
// WebSocket (one RPC message per binary WebSocket message, capnp::WebSocketMessageStream),
// with the same messages, but whose writes are a net::TwoPartyConnection's
// (net/two_party_connection.h): queued behind the send in flight (a WebSocket takes one send at
// a time), and a Finish (the server's "done with the answer to my call", e.g. once a phone's
// Inbox.deliver returned) waits for the connection's next message or for `flush` (the network
// thread's, within net::FinishFlush::kDelay), as on the TCP phone port.
//
// accept() hands out the one connection, once (the peer is the CLIENT vat); a second accept()
// never resolves. onDisconnect() resolves once the RPC system has let go of the connection
// (the peer went away, a write failed, or the RpcSystem was destroyed). A failed write aborts
// the WebSocket, which ends the connection's pending read.
//
// Created, used and destroyed on `flush`'s loop thread; `socket` must outlive it and the
// RpcSystem over it must be destroyed first. `flush` may go first (see net::FinishFlush).
class WebSocketVatNetwork final : public capnp::TwoPartyVatNetworkBase {
 public:
  WebSocketVatNetwork(kj::WebSocket& socket, net::FinishFlush& flush);
  WebSocketVatNetwork(const WebSocketVatNetwork&) = delete;
  WebSocketVatNetwork& operator=(const WebSocketVatNetwork&) = delete;

  kj::Promise<void> onDisconnect() { return disconnected_.addBranch(); }

  kj::Maybe<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> connect(
      capnp::rpc::twoparty::VatId::Reader hostId) override;
  kj::Promise<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> accept() override;

 private:
  // What TwoPartyConnection needs of a transport: a way to end the pending read after a
  // failed write (it calls only abortRead(), which aborts the WebSocket).
  class SocketAborter final : public kj::AsyncIoStream {
   public:
    explicit SocketAborter(kj::WebSocket& socket) : socket_(socket) {}
    void abortRead() override { socket_.abort(); }
    kj::Promise<size_t> tryRead(void*, size_t, size_t) override;
    kj::Promise<void> write(const void*, size_t) override;
    kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>>) override;
    kj::Promise<void> whenWriteDisconnected() override;
    void shutdownWrite() override;

   private:
    kj::WebSocket& socket_;
  };
  // The one connection: its peer is the client vat.
  class ToClient final : public net::TwoPartyConnection {
   public:
    using TwoPartyConnection::TwoPartyConnection;
    capnp::rpc::twoparty::VatId::Reader getPeerVatId() override;
  };
  // The RPC system letting go of the connection is the disconnect.
  class ReleaseDisposer final : public kj::Disposer {
   public:
    void disposeImpl(void* pointer) const override;
    mutable kj::Own<kj::PromiseFulfiller<void>> disconnected;
  };

  capnp::WebSocketMessageStream messages_;
  SocketAborter aborter_;
  ToClient connection_;
  ReleaseDisposer release_;
  kj::ForkedPromise<void> disconnected_ = nullptr;
  bool accepted_ = false;
};

}  // namespace switchboard::web
