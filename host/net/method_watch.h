#pragma once
// A capability that forwards every call to another one and reports when one chosen method
// returns successfully: how the host learns that a connection logged in without the
// protocol's servers knowing about connection policing.

#include <capnp/capability.h>

#include <cstdint>
#include <functional>

namespace switchboard::net {

// Returns a capability that forwards each call, parameters and capabilities included, to
// `inner` and copies its results back. When a call to (interfaceId, methodId) completes
// without an exception, `onSuccess` runs on the calling thread after the results were set;
// it must not throw. A failed call reports nothing. Other methods cost one extra copy of
// their parameters and results, so wrap only a capability with few calls (a bootstrap).
capnp::Capability::Client watchMethod(capnp::Capability::Client inner, uint64_t interfaceId,
                                      uint16_t methodId, std::function<void()> onSuccess);

}  // namespace switchboard::net
