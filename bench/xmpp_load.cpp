#include "xmpp_load.h"

#include <stdexcept>

#include "peer_servers.h"

namespace switchboard::bench {

int runXmppWorker(const BenchOptions&, WorkerLink& link) {
  link.note("XMPP mode is not built yet");
  return 2;
}

void startEjabberd(const BenchOptions&, const std::filesystem::path&, PeerServer&) {
  throw std::runtime_error("the ejabberd peer is not built yet");
}

}  // namespace switchboard::bench
