// cpu_stalls: how often, and for how long, this machine takes a CPU away from a program that
// wants all of it (the hypervisor's steal, kernel threads, interrupts), and what that alone
// allows a server's latency tail on that CPU (stall_summary.h has the model).
//
//   cpu_stalls --cpu 0 --seconds 20                 # the CPU sbbench --pin gives the server
//   cpu_stalls --cpu 0 --seconds 20 --mode sleep    # how late a wake-up on it runs
//
// --mode spin: it spins on the CPU reading the monotonic clock; a gap between two reads longer
// than the threshold (50 µs: far above the loop's own ~30 ns) is time the CPU was elsewhere.
// --mode sleep: it sleeps to deadlines --period-us apart and records how late each wake-up ran,
// what a server waiting for its next message meets. Run it alone: anything else on that CPU
// shows up as stalls.
#include <sched.h>
#include <time.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "stall_summary.h"

namespace {

std::int64_t monotonicNs() {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

// Sleeps to deadlines `periodNs` apart for `seconds`; the lateness of each wake-up.
std::vector<std::int64_t> sleepToDeadlines(double seconds, std::int64_t periodNs) {
  std::vector<std::int64_t> lateness;
  lateness.reserve(static_cast<std::size_t>(seconds * 1e9 / static_cast<double>(periodNs)) + 1);
  std::int64_t start = monotonicNs();
  std::int64_t end = start + static_cast<std::int64_t>(seconds * 1e9);
  for (std::int64_t due = start + periodNs; due <= end; due += periodNs) {
    timespec deadline{static_cast<time_t>(due / 1'000'000'000), due % 1'000'000'000};
    while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, nullptr) == EINTR) {
    }
    lateness.push_back(monotonicNs() - due);
  }
  return lateness;
}

int reportWakeups(int cpu, double seconds, double periodUs, double budgetUs, bool json) {
  auto lateness = sleepToDeadlines(seconds, static_cast<std::int64_t>(periodUs * 1000));
  auto s =
      switchboard::bench::summarizeWakeups(lateness, static_cast<std::int64_t>(budgetUs * 1000));
  double overShare = s.wakeups ? static_cast<double>(s.overBudget) / s.wakeups : 0;
  if (json) {
    std::printf(
        "{\"cpu\": %d, \"mode\": \"sleep\", \"seconds\": %.3f, \"period_us\": %.1f, "
        "\"wakeups\": %llu, \"late_p50_us\": %.1f, \"late_p99_us\": %.1f, "
        "\"late_p999_us\": %.1f, \"late_max_us\": %.1f, \"budget_us\": %.1f, "
        "\"late_over_budget\": %llu, \"late_over_budget_share\": %.6f}\n",
        cpu, seconds, periodUs, static_cast<unsigned long long>(s.wakeups), s.p50Ns / 1e3,
        s.p99Ns / 1e3, s.p999Ns / 1e3, s.longestNs / 1e3, budgetUs,
        static_cast<unsigned long long>(s.overBudget), overShare);
    return 0;
  }
  std::printf(
      "CPU %d, %.1f s, a wake-up every %.0f µs: %llu wake-ups, late by p50 %.0f µs, "
      "p99 %.0f µs, p99.9 %.0f µs, at most %.2f ms; %llu (%.3f%%) later than %.0f µs\n",
      cpu, seconds, periodUs, static_cast<unsigned long long>(s.wakeups), s.p50Ns / 1e3,
      s.p99Ns / 1e3, s.p999Ns / 1e3, s.longestNs / 1e6,
      static_cast<unsigned long long>(s.overBudget), 100 * overShare, budgetUs);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int cpu = 0;
  double seconds = 10;
  double thresholdUs = 50;
  double budgetUs = 1000;
  double quantile = 0.99;
  bool json = false;
  std::string mode = "spin";
  double periodUs = 1000;
  CLI::App app{"cpu_stalls: the times this machine takes a CPU away, and what they cost a tail"};
  app.add_option("--cpu", cpu, "the CPU to spin on (sbbench --pin puts the server on 0)");
  app.add_option("--seconds", seconds, "how long to spin")->check(CLI::Range(0.01, 3600.0));
  app.add_option("--threshold-us", thresholdUs, "a gap longer than this is a stall")
      ->check(CLI::Range(1.0, 1e6));
  app.add_option("--budget-us", budgetUs, "the latency budget the stalls are weighed against")
      ->check(CLI::Range(1.0, 1e7));
  app.add_option("--quantile", quantile, "the latency quantile held to the budget (0.99: p99)")
      ->check(CLI::Range(0.5, 0.99999));
  app.add_option("--mode", mode, "spin (the CPU taken away) or sleep (wake-ups late)")
      ->check(CLI::IsMember({"spin", "sleep"}));
  app.add_option("--period-us", periodUs, "--mode sleep: time between wake-ups")
      ->check(CLI::Range(10.0, 1e6));
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);

  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0) {
    std::fprintf(stderr, "cpu_stalls: cannot run on CPU %d\n", cpu);
    return 1;
  }
  if (mode == "sleep") return reportWakeups(cpu, seconds, periodUs, budgetUs, json);
  const auto threshold = static_cast<std::int64_t>(thresholdUs * 1000);
  std::vector<std::int64_t> gaps;
  gaps.reserve(1 << 16);
  std::int64_t start = monotonicNs();
  std::int64_t end = start + static_cast<std::int64_t>(seconds * 1e9);
  std::int64_t last = start;
  while (last < end) {
    std::int64_t now = monotonicNs();
    if (now - last > threshold) gaps.push_back(now - last);
    last = now;
  }
  double spun = static_cast<double>(last - start) / 1e9;
  auto s =
      switchboard::bench::summarizeStalls(gaps, spun, static_cast<std::int64_t>(budgetUs * 1000));
  double share = switchboard::bench::highestShareWithinBudget(s, quantile);
  double excessMsPerS = static_cast<double>(s.excessNs) / 1e6 / spun;
  if (json) {
    std::printf(
        "{\"cpu\": %d, \"mode\": \"spin\", \"seconds\": %.3f, \"threshold_us\": %.1f, \"stalls\": "
        "%llu, "
        "\"stalls_over_1ms\": %llu, \"stalls_over_2ms\": %llu, \"stalls_over_5ms\": %llu, "
        "\"longest_us\": %.1f, \"lost_share\": %.6f, \"budget_us\": %.1f, \"quantile\": %g, "
        "\"excess_ms_per_s\": %.4f, \"highest_share_within_budget\": %.4f}\n",
        cpu, spun, thresholdUs, static_cast<unsigned long long>(s.gaps),
        static_cast<unsigned long long>(s.over1ms), static_cast<unsigned long long>(s.over2ms),
        static_cast<unsigned long long>(s.over5ms), static_cast<double>(s.longestNs) / 1e3,
        static_cast<double>(s.lostNs) / 1e9 / spun, budgetUs, quantile, excessMsPerS, share);
    return 0;
  }
  std::printf(
      "CPU %d, %.1f s: %llu stalls over %.0f µs (%llu over 1 ms, %llu over 2 ms, %llu "
      "over 5 ms), longest %.2f ms, %.3f%% of the time lost\n",
      cpu, spun, static_cast<unsigned long long>(s.gaps), thresholdUs,
      static_cast<unsigned long long>(s.over1ms), static_cast<unsigned long long>(s.over2ms),
      static_cast<unsigned long long>(s.over5ms), static_cast<double>(s.longestNs) / 1e6,
      100.0 * static_cast<double>(s.lostNs) / 1e9 / spun);
  std::printf(
      "stall time past a %.0f µs budget: %.3f ms per second; by the stalls alone, the "
      "q%g latency stays within the budget up to a CPU share of %.2f\n",
      budgetUs, excessMsPerS, quantile * 100, share);
  return 0;
}
