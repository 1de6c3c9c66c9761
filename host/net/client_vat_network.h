#pragma once
// The client end of a two-party Cap'n Proto RPC connection (the vat that connects), read and
// written as the host's connections are: within limits, fast where the socket allows, its
// Finishes waiting for its next message.

#include "net/connection_limits.h"
#include "net/two_party_connection.h"

#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.h>
#include <capnp/serialize-async.h>
#include <kj/async-io.h>
#include <kj/timer.h>

namespace switchboard::net {

// What capnp::TwoPartyVatNetwork(stream, Side::CLIENT) is to its RpcSystem: a network of one
// connection, to the SERVER vat, with the same bytes on the wire, but whose messages go
// through a LimitedMessageStream (connection_limits.h) and a TwoPartyConnection
// (two_party_connection.h), as the host's do.
//
// Reading: one message at a time, as the RPC system asks. Over an ImmediateIoStream (the
// AsioStream RpcConnection makes without TLS; sbbench's StampedStream) a whole message of one
// segment the stream already read, or can read now, is handed over in a ready promise as one
// allocation, and an idle connection's next message is taken inside the reactor's handling of
// the socket's readability edge (no read promise, no KJ turn between the two). Over any other
// stream (TLS, a test's wrapper) each message is read with the stream's promises.
// Limits: what the server sends is held to `limits` (kClientConnectionLimits: the message
// size, the nesting, the server's calls in flight). A violation fails the read with its
// reason, logged once at warn ("RPC: the server broke this client's limits: ..."); the RPC
// system then ends the connection as for any read failure: calls in flight fail with
// DISCONNECTED and that reason, it writes an Abort and ends the sending side, and
// onDisconnect() resolves. Nothing past the violating message is read.
// Writing: a message sent while a write is in flight waits in a queue that goes out in one
// write once it completes, so the stream never sees overlapping writes (TLS), and order is
// kept (messages go out in the order the RPC system sent them). Over an ImmediateIoStream a
// message, or the queue, that fits below the stream's high-water mark (AsioStream:
// 256 KiB buffered) is copied into it at once, with no write promise: then no write is in
// flight and the next message goes the same way (an AsioStream sends them all at the end of
// the KJ drain). A failed write ends the reading side too, so the connection ends.
// Held Finishes: a Finish (sent when a call's answer is dropped, e.g. right after a
// Session.send returned) waits for the connection's next message, which takes it along in the
// same write (before it), or for a flush within `finishDelay`. A phone sending a message thus
// costs the host one read (the Call with the previous send's Finish) instead of two.
//
// connect() to the server hands out the one connection (capnp's RpcSystem asks for it on
// bootstrap()); onDisconnect() resolves once the RPC system has let go of it (after the peer
// went away or broke the limits, or when the RPC system is destroyed). accept() never
// resolves: a client accepts nothing. Created, used and destroyed on `timer`'s loop thread;
// `stream` and `timer` must outlive it, and the RpcSystem over it must be destroyed first.
// Finishes still held then are dropped with the connection (the server cleans up when the
// stream closes).
class ClientVatNetwork final : public capnp::TwoPartyVatNetworkBase {
 public:
  ClientVatNetwork(kj::AsyncIoStream& stream, kj::Timer& timer,
                   kj::Duration finishDelay = FinishFlush::kDelay,
                   const ConnectionLimits& limits = kClientConnectionLimits);
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

  LimitedMessageStream messages_;
  FinishFlush finishFlush_;
  ToServer connection_;
  ReleaseCounter releases_;
  kj::ForkedPromise<void> disconnected_ = nullptr;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>>>>
      acceptor_;  // never fulfilled
};

// What capnp::TwoPartyClient is, over a ClientVatNetwork: the RPC system of one client
// connection, whose flow limit is `limits.callFlowLimitBytes` (it stops reading while the
// server's unanswered calls hold more). Same threading and lifetime as ClientVatNetwork;
// destroying it ends the RPC state (outstanding calls and capabilities fail with
// DISCONNECTED).
class TwoPartyRpcClient {
 public:
  TwoPartyRpcClient(kj::AsyncIoStream& stream, kj::Timer& timer,
                    kj::Duration finishDelay = FinishFlush::kDelay,
                    const ConnectionLimits& limits = kClientConnectionLimits);
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
