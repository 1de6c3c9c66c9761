#include "server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace switchboard::bench {

std::int64_t monotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::int64_t processCpuNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void LoginClock::restart() {
  startNs_ = monotonicNs();
  cpuStartNs_ = processCpuNs();
}

void LoginClock::report(ReportFields& ready) const {
  ready.set("login_start_ns", startNs_);
  ready.set("login_end_ns", monotonicNs());
  ready.set("login_cpu_us", static_cast<double>(processCpuNs() - cpuStartNs_) / 1000.0);
}

std::uint64_t raiseFileLimit() {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  getrlimit(RLIMIT_NOFILE, &limit);
  return limit.rlim_cur;
}

void pinToCpu(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

ServerProcess::~ServerProcess() {
  stop();
}

void ServerProcess::start(const std::vector<std::string>& argv,
                          const std::filesystem::path& logPath, int cpu, const std::string& user) {
  if (argv.empty()) throw std::invalid_argument("no server command");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  if (!user.empty()) {
    passwd* account = ::getpwnam(user.c_str());
    if (account == nullptr) throw std::runtime_error("no user " + user + " on this machine");
    uid = account->pw_uid;
    gid = account->pw_gid;
    home = "HOME=" + std::string(account->pw_dir);
  }
  int logFd = ::open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (logFd < 0) throw std::runtime_error("cannot open " + logPath.string());
  pid_t child = ::fork();
  if (child < 0) {
    ::close(logFd);
    throw std::runtime_error("fork failed");
  }
  if (child == 0) {
    // Only async-signal-safe calls between fork and exec. The server dies with sbbench,
    // however sbbench ends.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::setpgid(0, 0);
    ::dup2(logFd, 1);
    ::dup2(logFd, 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      sched_setaffinity(0, sizeof(set), &set);
    }
    if (!user.empty()) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) _exit(126);
      ::putenv(home.data());
    }
    ::execvp(args[0], args.data());
    _exit(127);
  }
  ::close(logFd);
  ::setpgid(child, child);
  pid_ = child;
}

bool ServerProcess::running() const {
  if (pid_ <= 0 || exited_) return false;
  int status = 0;
  pid_t done = ::waitpid(pid_, &status, WNOHANG);
  if (done == 0) return true;
  exited_ = true;
  status_ = done == pid_ ? status : -1;
  return false;
}

void ServerProcess::waitForPort(const std::string& host, int port,
                                std::chrono::milliseconds timeout) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  while (std::chrono::steady_clock::now() < deadline) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    ::close(fd);
    if (ok) return;
    if (!running()) throw std::runtime_error("the server exited before listening (see its log)");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("the server did not listen on " + host + ":" + std::to_string(port) +
                           " in time");
}

int ServerProcess::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return -1;
  if (exited_) {
    pid_ = -1;
    return status_;
  }
  // ejabberd's runtime is started through su, in a session of its own: signal the whole
  // tree by pid, not only our process group.
  std::vector<pid_t> tree = descendantsOf(pid_);
  ::kill(-pid_, SIGTERM);
  for (pid_t p : tree) ::kill(p, SIGTERM);
  int status = -1;
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (true) {
    pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_ || done < 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (pid_t p : tree) ::kill(p, SIGKILL);
  ::kill(-pid_, SIGKILL);
  pid_ = -1;
  return status;
}

namespace {

struct StatLine {
  pid_t ppid = 0;
  double cpuSeconds = 0;
  double userCpuSeconds = 0;
};

bool readStat(pid_t pid, StatLine& out) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(in, text)) return false;
  // The command name may hold spaces: fields start after the last ')'.
  auto close = text.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream fields(text.substr(close + 2));
  std::string state;
  long ppid = 0;
  fields >> state >> ppid;
  std::string skip;
  for (int i = 0; i < 9; ++i) fields >> skip;  // pgrp .. cmajflt (fields 5-13)
  unsigned long long utime = 0, stime = 0;
  fields >> utime >> stime;
  out.ppid = static_cast<pid_t>(ppid);
  auto ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  out.cpuSeconds = static_cast<double>(utime + stime) / ticks;
  out.userCpuSeconds = static_cast<double>(utime) / ticks;
  return true;
}

std::uint64_t readRss(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

std::map<pid_t, StatLine> allProcesses() {
  std::map<pid_t, StatLine> all;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    StatLine line;
    if (readStat(std::stoi(name), line)) all[std::stoi(name)] = line;
  }
  return all;
}

std::vector<pid_t> treeOf(pid_t root, const std::map<pid_t, StatLine>& all) {
  std::vector<pid_t> tree{root};
  for (size_t i = 0; i < tree.size(); ++i) {
    for (const auto& [pid, line] : all) {
      if (line.ppid == tree[i]) tree.push_back(pid);
    }
  }
  return tree;
}

}  // namespace

std::vector<pid_t> descendantsOf(pid_t root) {
  std::vector<pid_t> tree = treeOf(root, allProcesses());
  tree.erase(tree.begin());
  return tree;
}

ProcSample sampleProc(pid_t root) {
  return sampleProcs({root});
}

ProcSample sampleProcs(const std::vector<pid_t>& roots) {
  ProcSample sample;
  sample.atNs = monotonicNs();
  std::map<pid_t, StatLine> all = allProcesses();
  // Each root and its descendants: ejabberd runs as a script, beam.smp and helpers.
  for (pid_t root : roots) {
    for (pid_t pid : treeOf(root, all)) {
      auto it = all.find(pid);
      if (it == all.end()) continue;
      sample.cpuSeconds += it->second.cpuSeconds;
      sample.userCpuSeconds += it->second.userCpuSeconds;
      sample.rssBytes += readRss(pid);
    }
  }
  std::ifstream sockstat("/proc/net/sockstat");
  std::string word;
  while (sockstat >> word) {
    if (word != "TCP:") continue;
    std::string key;
    std::uint64_t value = 0;
    for (int i = 0; i < 5 && sockstat >> key >> value; ++i) {
      if (key == "inuse") sample.tcpInUse = value;
      if (key == "mem")
        sample.tcpMemBytes = value * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
    }
    break;
  }
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    if (line.rfind("Slab:", 0) == 0) sample.slabBytes = std::stoull(line.substr(5)) * 1024;
  }
  return sample;
}

}  // namespace switchboard::bench
