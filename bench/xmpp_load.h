// sbbench's XMPP mode: a minimal XMPP client over raw sockets against ejabberd.
#pragma once

#include <filesystem>

#include "bench_options.h"
#include "worker_link.h"

namespace switchboard::bench {

struct PeerServer;

// One worker's share of an ejabberd run: per pair two users (registered beforehand with
// ejabberdctl) that open a stream, authenticate (SASL PLAIN), bind, start a session, send
// presence and exchange <message/> stanzas. Returns the exit code.
int runXmppWorker(const BenchOptions& options, WorkerLink& link);

// Starts ejabberd with bench/ejabberd.yml on its own node, spool and port, and registers
// the users the run needs with ejabberdctl. Throws std::runtime_error.
void startEjabberd(const BenchOptions& options, const std::filesystem::path& runDir,
                   PeerServer& server);

}  // namespace switchboard::bench
