#include "messaging/gateway_server.h"

#include "messaging/field_rules.h"
#include "messaging/session_server.h"

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

}  // namespace

GatewayServer::GatewayServer(MessagingService& service, ConnectionContext connection)
    : service_(service), connection_(std::move(connection)) {}

kj::Promise<void> GatewayServer::serverInfo(ServerInfoContext context) {
  auto results = context.getResults();
  results.setVersion(service_.options().version);
  results.setNode(service_.options().nodeName);
  return kj::READY_NOW;
}

kj::Promise<void> GatewayServer::requestCode(RequestCodeContext context) {
  auto params = context.getParams();
  return service_.requestCode(params.getPhone(), addressOf(connection_.peer))
      .then([context](std::uint32_t expires) mutable {
        context.getResults().setExpiresInSeconds(expires);
      });
}

kj::Promise<void> GatewayServer::verify(VerifyContext context) {
  auto params = context.getParams();
  return service_.verify(params.getPhone(), params.getCode(), params.getDeviceName())
      .then([context](std::string key) mutable {
        context.getResults().setKey(
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
          context.getResults().setSession(kj::heap<SessionServer>(service_, std::move(session)));
        });
  }
  auto session = service_.login(params.getPhone(),
                                std::string(reinterpret_cast<const char*>(key.begin()), key.size()),
                                params.getInbox(), connection_);
  context.getResults().setSession(kj::heap<SessionServer>(service_, std::move(session)));
  return kj::READY_NOW;
}

}  // namespace switchboard::messaging
