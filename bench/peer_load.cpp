#include "peer_load.h"

#include <sys/prctl.h>

#include <atomic>
#include <future>
#include <thread>

#include "offer_schedule.h"
#include "server_process.h"

namespace switchboard::bench {

namespace {
constexpr std::int64_t kSecond = 1000000000;
}

std::size_t peerFlows(const BenchOptions& options) {
  if (options.scenario == "connect") return 0;
  std::uint64_t pairs = options.scenario == "throughput" ? options.count : options.pairs;
  return std::max<std::uint64_t>(1, shareOf(pairs, options.procs, options.workerIndex));
}

int runPeerWorker(const BenchOptions& options, WorkerLink& link, PeerClients& clients,
                  std::size_t flows) {
  if (options.scenario != "connect" && options.scenario != "throughput" &&
      options.scenario != "latency") {
    link.note("the peers run connect, throughput and latency only, not " + options.scenario);
    return 2;
  }
  DeliveryLedger ledger(options.bodyBytes);
  for (std::size_t f = 0; f < flows; ++f) ledger.addFlow();
  std::atomic<std::int64_t> goNs{0};
  std::atomic<bool> stopRequested{false};
  std::promise<ReportFields> ready;
  std::promise<ReportFields> result;
  bool closedLoop = options.scenario == "throughput";

  std::thread loop([&]() {
    // Deadlines wake this thread when asked, not up to 50 µs later (the default slack).
    ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    try {
      ReportFields setupFields;
      clients.setup(setupFields);
      ready.set_value(setupFields);
    } catch (...) {
      ready.set_exception(std::current_exception());
      return;
    }
    bool running = false;
    // Sends flow's next message, stamped `intendedNs`; false if it could not be queued.
    auto sendOne = [&](std::uint32_t flow, std::int64_t intendedNs) {
      std::uint32_t seq = ledger.sent(flow);
      std::int64_t sentNs = 0;
      if (!clients.send(flow, seq, ledger.nextBody(flow, intendedNs), sentNs)) {
        ledger.sendFailed(flow);
        return false;
      }
      ledger.sentAt(flow, seq, sentNs);
      return true;
    };
    auto pump = [&](std::uint32_t flow) {
      while (running && ledger.inflight(flow) < options.window) {
        if (!sendOne(flow, monotonicNs())) break;
      }
    };
    clients.arrived = [&](const char* data, std::size_t size, const ArrivalStamp& at) {
      auto flow = ledger.received(data, size, at);
      if (flow && running && closedLoop) pump(*flow);
    };
    clients.acked = [&](std::uint32_t flow, std::uint32_t seq, bool ok) {
      if (ledger.acked(flow, seq, ok) && running && closedLoop) pump(flow);
    };
    // Waits that only watch for a command from the other thread: the next 5 ms boundary, so
    // the timer is re-armed once per 5 ms and not per wait.
    auto soon = []() {
      constexpr std::int64_t kStep = 5000000;
      return (monotonicNs() / kStep + 1) * kStep;
    };
    while (goNs.load() == 0 && !stopRequested.load()) clients.poll(soon());
    std::int64_t t0 = goNs.load();
    while (monotonicNs() < t0) clients.poll(t0);
    ledger.openWindow(t0 + static_cast<std::int64_t>(options.warmupSeconds * kSecond));
    running = options.scenario != "connect";
    std::int64_t loadCpuStartNs = processCpuNs();
    if (running && closedLoop) {
      for (std::uint32_t f = 0; f < flows; ++f) pump(f);
    }
    bool openLoop = running && !closedLoop && flows > 0;
    OfferSchedule schedule(
        t0, static_cast<double>(shareOf(options.count, options.procs, options.workerIndex)));
    std::uint64_t next = 0;
    while (!stopRequested.load()) {
      std::int64_t wakeNs = soon();
      if (openLoop) {
        // Every offer that is due goes now (normally the one the wait ended for); then sleep
        // until exactly the next one, or until an arrival.
        std::int64_t now = monotonicNs();
        std::int64_t due = schedule.dueNs(next);
        for (; due <= now; due = schedule.dueNs(++next)) {
          std::uint32_t flow = OfferSchedule::flowOf(next, flows);
          if (ledger.inflight(flow) < kOpenLoopInFlightLimit) {
            sendOne(flow, due);
          } else {
            ledger.skipped();
          }
        }
        wakeNs = std::min(wakeNs, due);
      }
      clients.poll(wakeNs);
    }
    running = false;
    ledger.closeWindow(monotonicNs());
    std::int64_t deadline = monotonicNs() + 10 * kSecond;
    while (!ledger.idle() && monotonicNs() < deadline) clients.poll(soon());
    ReportFields fields = ledger.result();
    fields.set("load_cpu_us", static_cast<double>(processCpuNs() - loadCpuStartNs) / 1000.0);
    clients.addResult(fields);
    result.set_value(fields);
  });

  auto readyFuture = ready.get_future();
  try {
    link.send("ready", readyFuture.get());
  } catch (const std::exception& e) {
    link.note(std::string("setup failed: ") + e.what());
    loop.join();
    return 1;
  }
  while (true) {
    WorkerLink::Command command = link.next();
    if (command.verb == "go") goNs.store(command.atNs);
    if (command.verb == "stop" || command.verb == "eof") break;
  }
  if (goNs.load() == 0) goNs.store(monotonicNs());
  stopRequested.store(true);
  ReportFields fields = result.get_future().get();
  loop.join();
  link.send("result", fields);
  return 0;
}

}  // namespace switchboard::bench
