// The bootstrap capability of the phone port (proto/client.capnp Gateway): one
// per connection, made on the connection's thread. It validates each call's
// fields and hands the work to the MessagingService; a login returns a
// Session capability bound to this connection.
//
// A successful login also lifts the connection's login deadline through
// `listener` (RpcListener::markLoggedIn), when the connection came through one
// (null for web phones). The Gateway is called directly by the RPC system: no
// forwarding capability sits in front of it, so a login costs one local call
// and an idle session no extra capability.
#pragma once

#include "messaging/messaging_service.h"
#include "switchboard/proto/client.capnp.h"

namespace switchboard::net {
class RpcListener;
}

namespace switchboard::messaging {

class GatewayServer final : public proto::Gateway::Server {
 public:
  GatewayServer(MessagingService& service, ConnectionContext connection,
                net::RpcListener* listener = nullptr);

 protected:
  kj::Promise<void> serverInfo(ServerInfoContext context) override;
  kj::Promise<void> requestCode(RequestCodeContext context) override;
  kj::Promise<void> verify(VerifyContext context) override;
  kj::Promise<void> login(LoginContext context) override;

 private:
  // The Session capability of a new session: held for the connection's life, so served
  // directly (net/direct_client.h), not through capnp's LocalClient.
  proto::Session::Client sessionCapability(std::shared_ptr<session::LiveSession> session);
  // The login succeeded: the connection has proved who it is.
  void loggedIn() const;

  MessagingService& service_;
  const ConnectionContext connection_;
  net::RpcListener* const listener_;  // not owned; outlives its connections
};

}  // namespace switchboard::messaging
