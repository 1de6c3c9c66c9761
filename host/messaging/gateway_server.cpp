#include "messaging/gateway_server.h"

#include "messaging/field_rules.h"
#include "messaging/session_server.h"
#include "net/direct_client.h"
#include "net/rpc_listener.h"

namespace switchboard::messaging {
namespace {

// The address part of a peer ("10.0.0.7:51234" -> "10.0.0.7", "[::1]:5" ->
// "::1"): rate limits are per address, not per connection.
std::string addressOf(const std::string& peer) {
  auto colon = peer.rfind(':');
  if (colon == std::string::npos) return peer;  // "unix"
  std::string address = peer.substr(0, colon);
  if (address.size() >= 2 && address.front() == '[' && address.back() == ']') {
    address = address.substr(1, address.size() - 2);
  }
  return address;
}

// First-segment sizes of the results, in words (capabilities second). Without a
// hint Cap'n Proto gives every Return an 8 KiB first segment, zero-filled.
constexpr capnp::MessageSize kServerInfoSize{32, 0};
constexpr capnp::MessageSize kCodeSize{2, 0};
constexpr capnp::MessageSize kKeySize{8, 0};
constexpr capnp::MessageSize kSessionSize{2, 1};

}  // namespace

GatewayServer::GatewayServer(MessagingService& service, ConnectionContext connection,
                             net::RpcListener* listener)
    : service_(service), connection_(std::move(connection)), listener_(listener) {}

proto::Session::Client GatewayServer::sessionCapability(
    std::shared_ptr<session::LiveSession> session) {
  return net::serveDirectly<proto::Session>(kj::heap<SessionServer>(service_, std::move(session)));
}

void GatewayServer::loggedIn() const {
  if (listener_) listener_->markLoggedIn(connection_.threadIndex, connection_.connectionId);
}

kj::Promise<void> GatewayServer::serverInfo(ServerInfoContext context) {
  auto results = context.getResults(kServerInfoSize);
  results.setVersion(service_.options().version);
  results.setNode(service_.options().nodeName);
  return kj::READY_NOW;
}

kj::Promise<void> GatewayServer::requestCode(RequestCodeContext context) {
  auto params = context.getParams();
  return service_.requestCode(params.getPhone(), addressOf(connection_.peer))
      .then([context](std::uint32_t expires) mutable {
        context.getResults(kCodeSize).setExpiresInSeconds(expires);
      });
}

kj::Promise<void> GatewayServer::verify(VerifyContext context) {
  auto params = context.getParams();
  return service_.verify(params.getPhone(), params.getCode(), params.getDeviceName())
      .then([context](std::string key) mutable {
        context.getResults(kKeySize).setKey(
            kj::arrayPtr(reinterpret_cast<const capnp::byte*>(key.data()), key.size()));
      });
}

kj::Promise<void> GatewayServer::login(LoginContext context) {
  auto params = context.getParams();
  auto key = params.getKey();
  if (service_.clustered()) {
    return service_
        .loginClustered(params.getPhone(),
                        std::string(reinterpret_cast<const char*>(key.begin()), key.size()),
                        params.getInbox(), connection_)
        .then([this, context](std::shared_ptr<session::LiveSession> session) mutable {
          context.getResults(kSessionSize).setSession(sessionCapability(std::move(session)));
          loggedIn();
        });
  }
  auto session = service_.login(params.getPhone(),
                                std::string(reinterpret_cast<const char*>(key.begin()), key.size()),
                                params.getInbox(), connection_);
  context.getResults(kSessionSize).setSession(sessionCapability(std::move(session)));
  loggedIn();
  return kj::READY_NOW;
}

}  // namespace switchboard::messaging
