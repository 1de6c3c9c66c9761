#pragma once
// The server ends of a network thread's Cap'n Proto RPC connections, as the VatNetwork one
// RpcSystem per thread serves them all through.

#include "net/two_party_connection.h"

#include <capnp/rpc-twoparty.h>
#include <capnp/serialize-async.h>
#include <kj/async-io.h>
#include <kj/timer.h>

#include <deque>
#include <functional>

namespace switchboard::net {

class ServerVatNetwork;

// Makes the bootstrap capability for each Bootstrap a served connection's peer sends after its
// first (the first gets the one the connection was made with). Called on the loop thread, from
// inside the RPC system; a throw fails that Bootstrap.
class BootstrapSource {
 public:
  virtual capnp::Capability::Client nextBootstrap() = 0;

 protected:
  ~BootstrapSource() = default;
};

// The server end of one two-party RPC connection: what capnp::TwoPartyVatNetwork(stream,
// Side::SERVER) is to its RpcSystem, with the same bytes on the wire (the peer is the CLIENT
// vat), but as one connection of a ServerVatNetwork that many share, and without what
// TwoPartyVatNetwork 0.9.2 keeps per connection for nothing: a kj::Maybe<kj::Exception> for a
// failed write, a forked disconnect promise, a canceler node around every pending read and
// the resolved node of the last write, each with room for a kj::Exception (~400 bytes).
//
// Reading and writing are TwoPartyConnection's (two_party_connection.h): one message at a time
// from `messages` (a LimitedMessageStream on the phone port); writes queued behind the one in
// flight. A Finish (the server's "done with the answer to my call", e.g. once a phone's
// Inbox.deliver returned) waits for the connection's next message, or for the network's
// flush (within FinishFlush::kDelay), so a phone that gets a stream of deliveries costs one
// write per delivery instead of two.
// Bootstrap: every Bootstrap the peer sends gets `bootstrap`, held for the connection's life;
// or, given `more`, the first gets `bootstrap` itself, handed to the RPC system, which keeps it
// only while the peer holds it (a phone releases its Gateway with its login's first write, so
// an idle session keeps no Gateway), and any later one gets a new one from `more`.
// Cutting: cut() shuts the socket `fd` both ways at once (the peer sees it close; the pending
// read ends, so the RPC system lets go) and makes shutdown() skip the queue.
// The end: once the RPC system lets go of the connection (after disconnecting and shutting
// down) `onEnded` runs, once. The owner destroys the connection after that, or before the
// network ever handed it to the RPC system (ServerVatNetwork::forget), but not from inside
// onEnded (that runs inside the RPC system's own code) and never while heldByRpc().
//
// Created, used and destroyed on the network's loop thread; `messages`, `transport` and `more`
// (if given) must outlive it.
class ServedConnection final : public TwoPartyConnection {
 public:
  ServedConnection(capnp::MessageStream& messages, kj::AsyncIoStream& transport, int fd,
                   capnp::Capability::Client bootstrap, BootstrapSource* more,
                   std::function<void()> onEnded);
  ~ServedConnection() noexcept(false);
  ServedConnection(const ServedConnection&) = delete;
  ServedConnection& operator=(const ServedConnection&) = delete;

  // The RPC system holds it: from ServerVatNetwork::accept() handing it over until onEnded.
  bool heldByRpc() const { return rpcHolds_; }
  void cut();

 private:
  friend class ServerVatNetwork;
  class EndedDisposer final : public kj::Disposer {
   public:
    explicit EndedDisposer(ServedConnection& connection) : connection_(connection) {}
    void disposeImpl(void* pointer) const override;

   private:
    ServedConnection& connection_;
  };

  // TwoPartyVatNetworkBase::Connection: the peer is the client vat.
  capnp::rpc::twoparty::VatId::Reader getPeerVatId() override;

  kj::Own<capnp::TwoPartyVatNetworkBase::Connection> handOver();
  // The capability for the peer's Bootstrap (see the class comment).
  capnp::Capability::Client nextBootstrap();

  const int fd_;
  kj::Maybe<capnp::Capability::Client> bootstrap_;  // with `more_`: until the first Bootstrap
  BootstrapSource* const more_;                     // null: `bootstrap_` is held
  std::function<void()> onEnded_;
  EndedDisposer endedDisposer_{*this};
  ServerVatNetwork* network_ = nullptr;  // set by add(): getPeerVatId() tells it who asks
  bool rpcHolds_ = false;
  bool cut_ = false;
};

// One network thread's server side of every RPC connection it serves, and the bootstrap
// factory of the one RpcSystem made over it (makeRpcServer(network, network)): an RpcSystem
// per connection (capnp's own object, its task set and connection map, the eager node of its
// accept loop) cost ~900 bytes per idle connection. add() hands a connection to the RPC
// system's accept loop; each bootstrap the peer asks for is that connection's `bootstrap`
// (capnp asks the connection for the peer's VatId just before it asks the factory, and only
// then: capnp 0.9.2's RpcConnectionState::handleBootstrap).
//
// Created, used and destroyed on its loop thread; destroy the RpcSystem first.
class ServerVatNetwork final : public capnp::TwoPartyVatNetworkBase,
                               public capnp::BootstrapFactory<capnp::rpc::twoparty::VatId> {
 public:
  // `timer` (the thread's) times the flushes of held Finishes.
  explicit ServerVatNetwork(kj::Timer& timer) : finishFlush_(timer) {}
  ServerVatNetwork(const ServerVatNetwork&) = delete;
  ServerVatNetwork& operator=(const ServerVatNetwork&) = delete;

  // Hands `connection` to the RPC system (now, or at its next accept()).
  void add(ServedConnection& connection);
  // Takes back a connection the RPC system has not accepted yet (before destroying it).
  void forget(ServedConnection& connection);

  kj::Maybe<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> connect(
      capnp::rpc::twoparty::VatId::Reader hostId) override;
  kj::Promise<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> accept() override;
  capnp::Capability::Client createFor(capnp::rpc::twoparty::VatId::Reader clientId) override;

 private:
  friend class ServedConnection;

  FinishFlush finishFlush_;                // the held Finishes of every connection added
  std::deque<ServedConnection*> waiting_;  // added, not yet accepted
  kj::Maybe<kj::Own<kj::PromiseFulfiller<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>>>>
      acceptor_;                        // the RPC system's pending accept()
  ServedConnection* asking_ = nullptr;  // whose bootstrap createFor() gives
};

}  // namespace switchboard::net
