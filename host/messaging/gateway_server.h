// The bootstrap capability of the phone port (proto/client.capnp Gateway): one
// per connection, made on the connection's thread. It validates each call's
// fields and hands the work to the MessagingService; a login returns a
// Session capability bound to this connection.
#pragma once

#include "messaging/messaging_service.h"
#include "switchboard/proto/client.capnp.h"

namespace switchboard::messaging {

class GatewayServer final : public proto::Gateway::Server {
 public:
  GatewayServer(MessagingService& service, ConnectionContext connection);

 protected:
  kj::Promise<void> serverInfo(ServerInfoContext context) override;
  kj::Promise<void> requestCode(RequestCodeContext context) override;
  kj::Promise<void> verify(VerifyContext context) override;
  kj::Promise<void> login(LoginContext context) override;

 private:
  MessagingService& service_;
  const ConnectionContext connection_;
};

}  // namespace switchboard::messaging
