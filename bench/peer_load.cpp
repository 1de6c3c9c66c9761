#include "peer_load.h"

#include <atomic>
#include <future>
#include <thread>

#include "phone_load.h"
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
    try {
      ReportFields setupFields;
      clients.setup(setupFields);
      ready.set_value(setupFields);
    } catch (...) {
      ready.set_exception(std::current_exception());
      return;
    }
    bool running = false;
    auto pump = [&](std::uint32_t flow) {
      while (running && ledger.inflight(flow) < options.window) {
        if (!clients.send(flow, ledger.nextBody(flow, monotonicNs()))) {
          ledger.sendFailed(flow);
          break;
        }
      }
    };
    clients.arrived = [&](const char* data, std::size_t size) {
      auto flow = ledger.received(data, size, monotonicNs());
      if (flow && running && closedLoop) pump(*flow);
    };
    while (goNs.load() == 0 && !stopRequested.load()) clients.poll(5);
    std::int64_t t0 = goNs.load();
    while (monotonicNs() < t0) clients.poll(1);
    ledger.openWindow(t0 + static_cast<std::int64_t>(options.warmupSeconds * kSecond));
    running = options.scenario != "connect";
    if (running && closedLoop) {
      for (std::uint32_t f = 0; f < flows; ++f) pump(f);
    }
    double rate = static_cast<double>(shareOf(options.count, options.procs, options.workerIndex));
    std::uint64_t offered = 0, roundRobin = 0;
    while (!stopRequested.load()) {
      if (running && !closedLoop && flows > 0) {
        auto due =
            static_cast<std::uint64_t>(rate * static_cast<double>(monotonicNs() - t0) / kSecond);
        while (offered < due) {
          auto flow = static_cast<std::uint32_t>(roundRobin++ % flows);
          std::int64_t scheduled =
              t0 + static_cast<std::int64_t>(static_cast<double>(offered) * kSecond / rate);
          if (ledger.inflight(flow) < 1000) {
            if (!clients.send(flow, ledger.nextBody(flow, scheduled))) ledger.sendFailed(flow);
          } else {
            ledger.skipped();
          }
          ++offered;
        }
      }
      clients.poll(1);
    }
    running = false;
    ledger.closeWindow(monotonicNs());
    std::int64_t deadline = monotonicNs() + 10 * kSecond;
    while (!ledger.idle() && monotonicNs() < deadline) clients.poll(5);
    result.set_value(ledger.result());
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
