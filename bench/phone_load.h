// The Switchboard side of sbbench: phones over raw Cap'n Proto, many per worker thread.
#pragma once

#include "bench_options.h"
#include "worker_link.h"

namespace switchboard::bench {

// Runs one worker's share of a Switchboard scenario against the server in `options`
// (serverHost:serverPort, codes read from options.codeLog): registers and logs in its
// phones, reports "ready", carries the load between "go" and "stop" and reports "result".
// Returns the process exit code.
int runPhoneWorker(const BenchOptions& options, WorkerLink& link);

// The i-th of `workers` shares of `total` (the first total % workers shares get one more).
std::uint64_t shareOf(std::uint64_t total, int workers, int index);

}  // namespace switchboard::bench
