// sbbench phones over the host's web endpoint (--transport ws): the HTTP upgrade to a
// WebSocket on /rpc, then two-party Cap'n Proto RPC with one RPC message per binary WebSocket
// message (capnp::WebSocketMessageStream), as Switchboard Web speaks it (docs/web.md).
#pragma once

#include <capnp/compat/websocket-rpc.h>
#include <capnp/rpc-twoparty.h>
#include <kj/compat/http.h>

#include <random>
#include <string>

namespace switchboard::bench {

// One phone's RPC over a WebSocket on `stream`. open() runs the handshake and resolves once the
// WebSocket is up; it fails if the endpoint answers anything but the upgrade. The stream must
// outlive the object. Single-threaded: on the stream's loop thread.
class WebSocketRpc {
 public:
  static kj::Promise<kj::Own<WebSocketRpc>> open(kj::AsyncIoStream& stream, std::string host);

  capnp::Capability::Client bootstrap();

  WebSocketRpc(kj::AsyncIoStream& stream, std::string host);

 private:
  // WebSocket masking keys; they only need to vary, not to be secret, on loopback.
  class MaskKeys final : public kj::EntropySource {
   public:
    void generate(kj::ArrayPtr<kj::byte> buffer) override {
      for (auto& b : buffer) b = static_cast<kj::byte>(engine_());
    }

   private:
    std::minstd_rand engine_{std::random_device{}()};
  };

  MaskKeys keys_;
  kj::HttpHeaderTable table_;
  std::string host_;
  kj::Own<kj::HttpClient> http_;
  kj::Own<kj::WebSocket> socket_;
  kj::Own<capnp::WebSocketMessageStream> messages_;
  kj::Own<capnp::TwoPartyVatNetwork> network_;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc_;
};

}  // namespace switchboard::bench
