#pragma once
// A capability that dispatches calls straight to one server object, without capnp's
// LocalClient around it.

#include <capnp/capability.h>

namespace switchboard::net {

// Wraps `server` as a capability (what capnp::Capability::Client(kj::Own<Server>) does, but
// through DirectClient below instead of capnp 0.9.2's LocalClient). For the objects a phone
// holds for its connection's whole life (the Gateway, the Session): LocalClient keeps a
// kj::Maybe<kj::Exception> and the machinery for streaming calls and path shortening, ~496 bytes
// per capability, and runs every call through an evalLater, a fork and an exclusive join with
// a tail-call promise; DirectClient is 40 bytes.
//
// Contract for the server (checked where it can be, stated where not):
//   * no method is declared `-> stream` (a streaming call is refused with an error);
//   * it does not override shortenPath() (it is never asked) and never calls thisCap() (capnp
//     sets the server's own hook only for LocalClient, so thisCap() would dereference null);
//   * no method tail-calls (context.tailCall): LocalClient forwards a tail call's pipeline to
//     calls pipelined on the results; here they would wait for the results, which a tail call
//     leaves empty.
// Calls: a call arriving over RPC is dispatched at once, inside the RPC system's handling of the
// Call message (LocalClient defers it to a later turn); a throw from the method, synchronous or
// not, fails the call with that exception. The results can be pipelined on as with LocalClient:
// a call pipelined before they exist waits for the call and fails with its error (or, if the
// call is dropped unfinished, with "the call was canceled").
// Calls made in process (newCall) go through a LocalClient made for that one request, which
// forwards to the same server. Loop thread only, like every capability.
capnp::Capability::Client serveDirectly(kj::Own<capnp::Capability::Server> server);

template <class Interface>
typename Interface::Client serveDirectly(kj::Own<typename Interface::Server> server) {
  return serveDirectly(kj::Own<capnp::Capability::Server>(kj::mv(server)))
      .template castAs<Interface>();
}

}  // namespace switchboard::net
