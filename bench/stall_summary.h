#pragma once
// What a machine's CPU stalls (the times a CPU was taken from a program that wanted all of it:
// the hypervisor's steal, kernel threads, interrupts) cost a server's latency tail. Counted by
// bench/cpu_stalls.cpp; summarized here, apart from the clock, so the arithmetic is tested.

#include <cstdint>
#include <span>

namespace switchboard::bench {

struct StallSummary {
  double seconds = 0;          // the window spun through
  std::uint64_t gaps = 0;      // gaps given to summarizeStalls (each over the probe's threshold)
  std::uint64_t over1ms = 0;   // of them, longer than 1 ms
  std::uint64_t over2ms = 0;   // ... 2 ms
  std::uint64_t over5ms = 0;   // ... 5 ms
  std::int64_t longestNs = 0;  // the longest gap
  std::int64_t lostNs = 0;     // all gaps together
  std::int64_t budgetNs = 0;   // the latency budget the excess is counted against
  std::int64_t excessNs = 0;   // sum over the gaps of (gap - budget), for gaps over the budget
};

// Summarizes `gapsNs` (each gap's length) seen in `seconds` of spinning, against a latency
// budget of `budgetNs`.
StallSummary summarizeStalls(std::span<const std::int64_t> gapsNs, double seconds,
                             std::int64_t budgetNs);

// Wake-ups that were due on a CPU and came late (bench/cpu_stalls.cpp --mode sleep): a thread
// sleeping to deadlines `period` apart, as a server waits for its next message, and how late
// each wake-up ran. What a spinning probe cannot see: a CPU that went idle must first be given
// back (on a VM, the hypervisor runs the idle vCPU again) before anything on it runs.
struct WakeSummary {
  std::uint64_t wakeups = 0;
  std::int64_t p50Ns = 0, p99Ns = 0, p999Ns = 0, longestNs = 0;  // of the lateness
  std::uint64_t overBudget = 0;                                  // wake-ups later than the budget
  std::int64_t budgetNs = 0;
};

// Summarizes the lateness of each wake-up (`latenessNs`, in any order) against `budgetNs`.
WakeSummary summarizeWakeups(std::span<const std::int64_t> latenessNs, std::int64_t budgetNs);

// The highest CPU share at which a server on that CPU, serving an open loop in arrival order,
// can keep the `quantile` (0.99: p99) of its latency under the budget, by the stalls alone.
//
// The model: a server busy a share `rho` of the time that loses its CPU for a gap S finds the
// work of the gap waiting, and clears it at a rate of (1 - rho) of its time; a message that
// arrived t after the gap began waits S - (1 - rho) t. So the messages delayed past the budget
// L are those that arrive within (S - L) / (1 - rho) of each gap's start, a share
// excess / (1 - rho) of all messages, with excess the sum of (S - L) per second. That share
// stays under 1 - quantile while rho < 1 - excess / (1 - quantile). The server's own service
// time and queueing come on top, so this is an upper bound on the share, never a promise.
// 0 when the stalls alone break the budget at any load.
double highestShareWithinBudget(const StallSummary& summary, double quantile);

}  // namespace switchboard::bench
