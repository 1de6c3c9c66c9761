// Prints what idle RPC connections cost in memory: opens N connections (client and server
// in this one process), makes one call on each so both sides have read and written, then
// reads VmRSS and the malloc heap in use. A figure printer, not a test: nothing is asserted.
//
//   net_idle_connection_memory [connections=2000]

#include "net/network_thread.h"
#include "net/rpc_connection.h"
#include "net/rpc_listener.h"

#include "test_service.capnp.h"

#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace switchboard::net {
namespace {

class EchoService final : public TestService::Server {
 public:
  kj::Promise<void> echo(EchoContext context) override {
    context.getResults().setText(context.getParams().getText());
    return kj::READY_NOW;
  }
};

long vmRssKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

size_t heapInUse() {
  return mallinfo2().uordblks;
}

int run(int connections) {
  NetworkThread server{"server"};
  NetworkThread client{"client"};
  server.start();
  client.start();
  std::optional<RpcListener> listener;
  listener.emplace(
      std::vector<NetworkThread*>{&server}, "127.0.0.1:0",
      [](const ConnectionInfo&) -> capnp::Capability::Client { return kj::heap<EchoService>(); });
  std::string endpoint = listener->boundEndpoint();

  // Warm up allocators and the loops with one connection that stays out of the figures.
  std::vector<kj::Own<RpcConnection>> open;   // client thread only
  std::vector<TestService::Client> services;  // client thread only
  auto connectAndCall = [&] {
    return RpcConnection::connect(client, endpoint).then([&](kj::Own<RpcConnection> c) {
      auto service = c->bootstrapAs<TestService>();
      open.push_back(kj::mv(c));
      auto request = service.echoRequest();
      request.setText("hello");
      services.push_back(kj::mv(service));
      return request.send().ignoreResult();
    });
  };
  client.runSync(connectAndCall);

  long rssBefore = vmRssKiB();
  size_t heapBefore = heapInUse();
  for (int i = 0; i < connections; ++i) client.runSync(connectAndCall);
  long rssAfter = vmRssKiB();
  size_t heapAfter = heapInUse();

  std::printf("idle RPC connections: %d (client and server ends in this process)\n", connections);
  std::printf("VmRSS: %ld KiB -> %ld KiB, %.1f KiB per connection (both ends)\n", rssBefore,
              rssAfter, double(rssAfter - rssBefore) / connections);
  std::printf("malloc in use: %zu KiB -> %zu KiB, %.1f KiB per connection (both ends)\n",
              heapBefore / 1024, heapAfter / 1024,
              double(heapAfter - heapBefore) / 1024.0 / connections);

  client.runSync([&] {
    services.clear();
    open.clear();
  });
  listener.reset();
  return 0;
}

}  // namespace
}  // namespace switchboard::net

int main(int argc, char** argv) {
  int connections = argc > 1 ? std::atoi(argv[1]) : 2000;
  return switchboard::net::run(connections);
}
