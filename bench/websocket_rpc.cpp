#include "websocket_rpc.h"

#include <kj/debug.h>

namespace switchboard::bench {

WebSocketRpc::WebSocketRpc(kj::AsyncIoStream& stream, std::string host) : host_(std::move(host)) {
  kj::HttpClientSettings settings;
  settings.entropySource = keys_;
  http_ = kj::newHttpClient(table_, stream, settings);
}

kj::Promise<kj::Own<WebSocketRpc>> WebSocketRpc::open(kj::AsyncIoStream& stream, std::string host) {
  auto rpc = kj::heap<WebSocketRpc>(stream, kj::mv(host));
  kj::HttpHeaders headers(rpc->table_);
  headers.set(kj::HttpHeaderId::HOST, rpc->host_);
  auto upgrade = rpc->http_->openWebSocket("/rpc", headers);
  return upgrade.then([rpc = kj::mv(rpc)](kj::HttpClient::WebSocketResponse&& response) mutable
                      -> kj::Own<WebSocketRpc> {
    KJ_SWITCH_ONEOF(response.webSocketOrBody) {
      KJ_CASE_ONEOF(body, kj::Own<kj::AsyncInputStream>) {
        KJ_FAIL_REQUIRE("the web endpoint refused the WebSocket", response.statusCode);
      }
      KJ_CASE_ONEOF(socket, kj::Own<kj::WebSocket>) {
        rpc->socket_ = kj::mv(socket);
        rpc->messages_ = kj::heap<capnp::WebSocketMessageStream>(*rpc->socket_);
        rpc->network_ = kj::heap<capnp::TwoPartyVatNetwork>(*rpc->messages_,
                                                            capnp::rpc::twoparty::Side::CLIENT);
        rpc->rpc_ = kj::heap<capnp::RpcSystem<capnp::rpc::twoparty::VatId>>(
            capnp::makeRpcClient(*rpc->network_));
        return kj::mv(rpc);
      }
    }
    KJ_UNREACHABLE;
  });
}

capnp::Capability::Client WebSocketRpc::bootstrap() {
  capnp::MallocMessageBuilder vat(4);
  auto id = vat.initRoot<capnp::rpc::twoparty::VatId>();
  id.setSide(capnp::rpc::twoparty::Side::SERVER);
  return rpc_->bootstrap(id);
}

}  // namespace switchboard::bench
