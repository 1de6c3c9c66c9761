#include "running_host.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace switchboard::integration {
namespace {

// Under ASan a plugin canary is a fresh instrumented process: on a loaded 2-core box its
// start-up alone passed the host's 5 s default (the host refused to start), and the four
// canaries of a start took 24 s. Test hosts get room for that; the normal build keeps the
// host's default and a 30 s start guard.
#if defined(__SANITIZE_ADDRESS__)
constexpr const char* kSanitizedCanaryTimeout = "30000";
constexpr std::chrono::seconds kStartGuard{120};
#else
constexpr const char* kSanitizedCanaryTimeout = nullptr;
constexpr std::chrono::seconds kStartGuard{30};
#endif

}  // namespace

// ---------------------------------------------------------------- SmsFile

SmsFile::SmsFile(const std::filesystem::path& dir)
    : script_(dir / "sms.sh"), lines_(dir / "sms.txt") {
  std::ofstream out(script_);
  out << "#!/bin/sh\necho \"$1 $2\" >> '" << lines_.string() << "'\n";
  out.close();
  std::filesystem::permissions(script_, std::filesystem::perms::owner_all);
}

std::vector<std::string> SmsFile::codes(const std::string& phone) const {
  std::vector<std::string> found;
  std::ifstream in(lines_);
  std::string line;
  // Only whole lines: the sink's shell may be writing the last one right now,
  // and half a code read as the code fails a verify that would have passed.
  while (std::getline(in, line) && !in.eof()) {
    std::istringstream fields(line);
    std::string to;
    std::string code;
    if (fields >> to >> code && to == phone) found.push_back(code);
  }
  return found;
}

int connectToLoopback(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string registerPhone(client::Client& client, const SmsFile& sms, const std::string& phone,
                          const std::string& deviceName) {
  std::size_t before = sms.codes(phone).size();
  client.requestCode(phone);
  if (!waitUntil([&] { return sms.codes(phone).size() > before; })) {
    throw std::runtime_error("no SMS code arrived for " + phone);
  }
  return client.verify(phone, sms.codes(phone).back(), deviceName);
}

// ---------------------------------------------------------------- RunningHost

RunningHost::RunningHost(std::vector<std::string> extraArgs)
    : dataDir_(dir_.path() / "data"),
      logPath_(dir_.path() / "host.log"),
      sms_(dir_.path()),
      extraArgs_(std::move(extraArgs)) {
  std::filesystem::create_directories(dataDir_);
  if (std::find(extraArgs_.begin(), extraArgs_.end(), "--metrics-listen") == extraArgs_.end()) {
    metricsPort_ = freePort();
  }
}

RunningHost::~RunningHost() {
  if (running()) stop();
  // A failed test shows what the host said (its temp dir is about to go).
  if (::testing::Test::HasFailure() || std::uncaught_exceptions() > 0) {
    std::string text = log();
    auto kept = std::filesystem::temp_directory_path() /
                ("switchboard-it-" + std::to_string(::getpid()) + "-host.log");
    std::ofstream(kept, std::ios::app) << text;
    std::cerr << "(the whole host log: " << kept.string() << ")\n";
    std::cerr << "---- host log tail ----\n"
              << text.substr(text.size() > 6000 ? text.size() - 6000 : 0) << "----\n";
  }
}

std::string RunningHost::endpoint() const {
  return "127.0.0.1:" + std::to_string(port_);
}

client::ClientOptions RunningHost::clientOptions() const {
  client::ClientOptions options;
  options.endpoint = endpoint();
  return options;
}

std::string RunningHost::log() const {
  std::ifstream in(logPath_);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void RunningHost::start() {
  if (running()) throw std::logic_error("the host is already running");
  bool firstStart = port_ == 0;
  for (int attempt = 0; attempt < 10; ++attempt) {
    // freePort() may hand out the metrics port again (it was closed too).
    if (firstStart) {
      do port_ = freePort();
      while (port_ == metricsPort_);
    }
    if (spawnAndWait()) return;
    // Only "address in use" is worth retrying: on a first start with another
    // port, on a restart (the old sockets may linger) with the same one.
    if (log().find("already in use") == std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::string text = log();
  throw std::runtime_error("the host did not start; log tail:\n" +
                           text.substr(text.size() > 4000 ? text.size() - 4000 : 0));
}

bool RunningHost::spawnAndWait() {
  std::vector<std::string> args = {SWITCHBOARD_HOST_BINARY,
                                   "--listen",
                                   endpoint(),
                                   "--data-dir",
                                   dataDir_.string(),
                                   "--admin-socket",
                                   adminSocket().string(),
                                   "--plugin-dir",
                                   SWITCHBOARD_PLUGIN_DIR,
                                   "--sms-command",
                                   sms_.script().string()};
  args.insert(args.end(), extraArgs_.begin(), extraArgs_.end());
  auto byDefault = [&](const std::string& flag, const std::string& value) {
    if (std::find(extraArgs_.begin(), extraArgs_.end(), flag) == extraArgs_.end()) {
      args.insert(args.end(), {flag, value});
    }
  };
  if (metricsPort_ != 0) byDefault("--metrics-listen", "127.0.0.1:" + std::to_string(metricsPort_));
  byDefault("--web-listen", "");  // not the shared default port: tests run side by side
  byDefault("--threads", "2");
  if (kSanitizedCanaryTimeout) byDefault("--canary-timeout-ms", kSanitizedCanaryTimeout);
  // Info unless the test asks for more ("serving phones on" is logged at info).
  byDefault("--log-level", "info");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, logPath_.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  int error = ::posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) throw std::runtime_error("cannot spawn " + args[0]);

  std::size_t logBefore = log().size();
  bool exited = false;
  bool ready = waitUntil(
      [&] {
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid) {
          exited = true;
          return true;
        }
        return log().find("serving phones on", logBefore) != std::string::npos;
      },
      kStartGuard);
  if (exited) return false;
  if (!ready) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return false;
  }
  pid_ = pid;
  return true;
}

void RunningHost::kill9() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

int RunningHost::stop() {
  if (!running()) return 0;
  ::kill(pid_, SIGTERM);
  int status = 0;
  bool done = waitUntil([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; });
  if (!done) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  return status;
}

std::optional<double> RunningHost::metric(const std::string& name) const {
  if (metricsPort_ == 0) return std::nullopt;
  int fd = connectToLoopback(metricsPort_);
  if (fd < 0) return std::nullopt;
  // The host closes the connection after its answer: read to EOF.
  std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return std::nullopt;
  }
  std::string text;
  char buffer[8192];
  for (ssize_t got; (got = ::read(fd, buffer, sizeof(buffer))) > 0;) text.append(buffer, got);
  ::close(fd);
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return std::nullopt;
}

}  // namespace switchboard::integration
