// The peers' side of sbbench: client fleets for mosquitto and ejabberd on one loop thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "bench_options.h"
#include "delivery_ledger.h"
#include "receive_stamp.h"
#include "report_fields.h"
#include "server_process.h"
#include "worker_link.h"

namespace switchboard::bench {

// One worker's clients of a server (a peer's, or Switchboard's lean phones), driven from one
// thread. For `connect` there are options.count / procs idle clients; otherwise two per
// flow: 2f sends, 2f+1 receives.
class PeerClients {
 public:
  virtual ~PeerClients() = default;
  // Connects and logs in (subscribes) every client, driving its own I/O. Fills "registered",
  // "logged_in", "login_failures", "login_start_ns", "login_end_ns", "first_failure".
  virtual void setup(ReportFields& ready) = 0;
  // Runs I/O until something was ready or until deadlineNs (CLOCK_MONOTONIC) passes; every
  // message a receiver gets goes to arrived(), with the stamps of the socket read that
  // completed it (the kernel's receive timestamp and the clock read just after the read).
  virtual void poll(std::int64_t deadlineNs) = 0;
  // Sends `body` (message `seq` of `flow`) from flow's sender to flow's receiver; false if it
  // could not be queued. `sentNs` is the clock read just before the bytes were written to
  // the socket.
  virtual bool send(std::uint32_t flow, std::uint32_t seq, const std::string& body,
                    std::int64_t& sentNs) = 0;
  // Adds the clients' own figures to a worker's result (failures a protocol check found).
  virtual void addResult(ReportFields&) {}

  std::function<void(const char* data, std::size_t size, const ArrivalStamp& at)> arrived;
  // A server that acknowledges sends (Switchboard's "sent" tick) reports each answer here:
  // message `seq` of `flow` was acknowledged (ok) or refused or lost with its connection.
  // Clients of servers without acknowledgements never call it.
  std::function<void(std::uint32_t flow, std::uint32_t seq, bool ok)> acked;
};

// Runs the ready / go / stop protocol for `clients`: the load loop on a thread of its own,
// commands on the calling thread. Closed loop (throughput: options.window in flight per flow
// until received) or open loop (latency: options.count msgs/s, each message sent at its own
// scheduled time; the loop sleeps until exactly the next one is due).
int runPeerWorker(const BenchOptions& options, WorkerLink& link, PeerClients& clients,
                  std::size_t flows);

// The number of flows (pairs) one worker carries for `options`.
std::size_t peerFlows(const BenchOptions& options);

// A worker whose load `Clients` carries (a PeerClients constructed from the options and the
// worker's number of flows): raises the open-files limit, then runPeerWorker.
template <class Clients>
int runPeerWorkerWith(const BenchOptions& options, WorkerLink& link) {
  raiseFileLimit();
  std::size_t flows = peerFlows(options);
  Clients clients(options, flows);
  return runPeerWorker(options, link, clients, flows);
}

}  // namespace switchboard::bench
