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

}  // namespace switchboard::bench
