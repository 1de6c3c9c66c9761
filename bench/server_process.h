// The servers a benchmark runs (Switchboard, mosquitto, ejabberd) and what /proc says of them.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "report_fields.h"

namespace switchboard::bench {

// One server child process the benchmark started and will stop.
//
// start() forks and execs `argv` with stdout and stderr appended to `logPath`, the soft
// RLIMIT_NOFILE raised to the hard limit, and (if cpu >= 0) pinned to that CPU. The
// destructor stops it: SIGTERM to its process group, a bounded wait, then SIGKILL, so a
// benchmark that fails half-way never leaves a server behind. Not thread-safe.
class ServerProcess {
 public:
  ServerProcess() = default;
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // `user`, when not empty, is the account the command runs as (root only): ejabberd's
  // scripts would otherwise switch with su, whose PAM limits cut open files to 1024.
  void start(const std::vector<std::string>& argv, const std::filesystem::path& logPath, int cpu,
             const std::string& user = {});
  // Waits until 127.0.0.1:port (or the given host) accepts a TCP connection; throws
  // std::runtime_error after `timeout` or when the process has exited.
  void waitForPort(const std::string& host, int port, std::chrono::milliseconds timeout) const;
  // SIGTERM, up to `grace` for the exit, then SIGKILL. Returns the wait status (or -1).
  int stop(std::chrono::milliseconds grace = std::chrono::milliseconds(10000));
  bool running() const;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  mutable bool exited_ = false;  // reaped by running(); status_ holds the wait status
  mutable int status_ = -1;
};

// The pids of `root`'s descendants (children, grandchildren, ...), from /proc.
std::vector<pid_t> descendantsOf(pid_t root);

// What /proc tells about a process tree and the kernel's sockets at one instant.
struct ProcSample {
  double cpuSeconds = 0;          // utime + stime of the process and its descendants
  double userCpuSeconds = 0;      // the utime part: the server's own code, not the kernel's
  std::uint64_t rssBytes = 0;     // VmRSS summed over the same processes
  std::uint64_t tcpMemBytes = 0;  // /proc/net/sockstat TCP "mem" (pages) in bytes
  std::uint64_t tcpInUse = 0;     // /proc/net/sockstat TCP "inuse"
  std::uint64_t slabBytes = 0;    // /proc/meminfo Slab: socket structs live here
  std::int64_t atNs = 0;          // CLOCK_MONOTONIC
};

ProcSample sampleProc(pid_t root);
// The same over several process trees (a cluster's nodes and its nats-server): CPU and RSS
// summed, the kernel's figures once.
ProcSample sampleProcs(const std::vector<pid_t>& roots);

// CLOCK_MONOTONIC in ns: the same clock in every process of the machine, so a timestamp
// written into a message body by one process is comparable in another.
std::int64_t monotonicNs();

// CPU time (user + system) of the calling process, all its threads, in ns
// (CLOCK_PROCESS_CPUTIME_ID): what a load generator's own work cost.
std::int64_t processCpuNs();

// A generator's logins, timed: the wall clock (CLOCK_MONOTONIC) and the process's CPU from
// construction (or restart()) to report(), which sets login_start_ns, login_end_ns and
// login_cpu_us in a worker's "ready" fields (sbbench sums the CPU over workers).
class LoginClock {
 public:
  LoginClock() { restart(); }
  void restart();
  void report(ReportFields& ready) const;

 private:
  std::int64_t startNs_ = 0, cpuStartNs_ = 0;
};

// Sets this process's soft RLIMIT_NOFILE to its hard limit; returns the new soft limit.
std::uint64_t raiseFileLimit();

// Pins the calling process (all its future threads) to `cpu`; no-op for cpu < 0.
void pinToCpu(int cpu);

}  // namespace switchboard::bench
