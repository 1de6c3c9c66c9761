// sbbench's lean Switchboard phones: the phone protocol spoken frame by frame, many phones
// on one epoll loop, without capnp's RpcSystem (sbbench --generator lean).
#pragma once

#include <cstddef>
#include <memory>

#include "bench_options.h"
#include "peer_load.h"
#include "worker_link.h"

namespace switchboard::bench {

// Runs one worker's share of `connect`, `throughput` or `latency` against one Switchboard
// host over TCP with lean phones (rpc_frames.h): the same phones, numbers, registration,
// login, messages, ledger and figures as the full phones of phone_load.h, with a generator
// that costs about what the MQTT one does. Returns the process exit code.
int runLeanPhoneWorker(const BenchOptions& options, WorkerLink& link);

// The lean phones of one worker carrying `flows` pairs (none for `connect`), to be driven
// from one thread: what runLeanPhoneWorker runs, for tests that set them against a server of
// their own. Their result fields (addResult) add protocol_errors, disconnects,
// delivered_ticks and ticks_awaited to the ledger's.
std::unique_ptr<PeerClients> makeLeanPhones(const BenchOptions& options, std::size_t flows);

}  // namespace switchboard::bench
