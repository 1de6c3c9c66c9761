#pragma once
// The client end of a two-party Cap'n Proto RPC connection (the vat that connects), whose
// Finishes wait for its next message as the server's do.

#include "net/two_party_connection.h"

#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.h>
#include <capnp/serialize-async.h>
#include <kj/async-io.h>
#include <kj/timer.h>

namespace switchboard::net {

// What capnp::TwoPartyVatNetwork(stream, Side::CLIENT) is to its RpcSystem: a network of one
// connection, to the SERVER vat, with the same bytes on the wire, but whose writes are a
// TwoPartyConnection's (two_party_connection.h): queued behind the write in flight, never
// overlapping (TLS), and a Finish (sent when a call's answer is dropped, e.g. right after a
// Session.send returned) waits for the connection's next message, which takes it along in the
// same write, or for a flush within `finishDelay`. A phone sending a message thus costs the
// host one read (the Call with the previous send's Finish) instead of two.
//
// connect() to the server hands out the one connection (capnp's RpcSystem asks for it on
// bootstrap()); onDisconnect() resolves once the RPC system has let go of it (after the peer
// went away, or when the RPC system is destroyed). accept() never resolves: a client accepts
// nothing. Created, used and destroyed on `timer`'s loop thread; `stream` and `timer` must
// outlive it, and the RpcSystem over it must be destroyed first. Finishes still held then
// are dropped with the connection (the server cleans up when the stream closes).
class ClientVatNetwork final : public capnp::TwoPartyVatNetworkBase {
 public:
  ClientVatNetwork(kj::AsyncIoStream& stream, kj::Timer& timer,
                   kj::Duration finishDelay = FinishFlush::kDelay);
  ClientVatNetwork(const ClientVatNetwork&) = delete;
  ClientVatNetwork& operator=(const ClientVatNetwork&) = delete;

  kj::Promise<void> onDisconnect() { return disconnected_.addBranch(); }

  kj::Maybe<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> connect(
      capnp::rpc::twoparty::VatId::Reader hostId) override;
  kj::Promise<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> accept() override;

 private:
  // The one connection: its peer is the server vat.
  class ToServer final : public TwoPartyConnection {
   public:
    using TwoPartyConnection::TwoPartyConnection;
    capnp::rpc::twoparty::VatId::Reader getPeerVatId() override;
  };
  // Counts the RPC system's references to the connection; the last one dropped is the
  // disconnect.
  class ReleaseCounter final : public kj::Disposer {
   public:
    void disposeImpl(void* pointer) const override;
    mutable unsigned references = 0;
    mutable kj::Own<kj::PromiseFulfiller<void>> disconnected;
  };

  capnp::AsyncIoMessageStream messages_;
  FinishFlush finishFlush_;
  ToServer connection_;
  ReleaseCounter releases_;
  kj::ForkedPromise<void> disconnected_ = nullptr;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>>>>
      acceptor_;  // never fulfilled
};

// What capnp::TwoPartyClient is, over a ClientVatNetwork: the RPC system of one client
// connection. Same threading and lifetime as ClientVatNetwork; destroying it ends the RPC
// state (outstanding calls and capabilities fail with DISCONNECTED).
class TwoPartyRpcClient {
 public:
  TwoPartyRpcClient(kj::AsyncIoStream& stream, kj::Timer& timer,
                    kj::Duration finishDelay = FinishFlush::kDelay);
  TwoPartyRpcClient(const TwoPartyRpcClient&) = delete;
  TwoPartyRpcClient& operator=(const TwoPartyRpcClient&) = delete;

  // The server's bootstrap capability.
  capnp::Capability::Client bootstrap();
  kj::Promise<void> onDisconnect() { return network_.onDisconnect(); }

 private:
  ClientVatNetwork network_;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpcSystem_;
};

}  // namespace switchboard::net
