#include "plugin/canary.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <thread>
#include <vector>

#include "plugin/plugin_error.h"
#include "plugin/plugin_library.h"

extern char** environ;

namespace switchboard::plugin {

namespace {

std::optional<Kind> kindFromName(std::string_view name) {
  for (Kind kind : {Kind::routing, Kind::auth, Kind::presence, Kind::offline}) {
    if (kindName(kind) == name) return kind;
  }
  return std::nullopt;
}

// What the library under test may ask of the host inside the canary: nothing
// that touches shared state, so logs go to stderr and counters nowhere.
class CanaryHostServices final : public HostServices {
 public:
  void log(LogLevel level, std::string_view message) override {
    std::cerr << "canary plugin log [" << static_cast<int>(level) << "] " << message << '\n';
  }
  void count(std::string_view, std::uint64_t) override {}
  std::int64_t nowMs() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

std::string oneLine(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

int reply(int code, const std::string& line) {
  std::cout << oneLine(line) << std::endl;
  return code;
}

}  // namespace

// ---------------------------------------------------------------- child

int runCanary(int argc, char** argv) {
  // A crashing plugin is an expected outcome here, not something to debug.
  struct rlimit noCore {};
  ::setrlimit(RLIMIT_CORE, &noCore);
  if (argc != 4 || std::string_view(argv[1]) != "canary") {
    return reply(kCanaryUsage, "usage: canary <kind> <library-path>");
  }
  auto kind = kindFromName(argv[2]);
  if (!kind) return reply(kCanaryUsage, "unknown kind: " + std::string(argv[2]));

  std::shared_ptr<PluginLibrary> library;
  try {
    library = PluginLibrary::open(argv[3], *kind);
  } catch (const std::exception& e) {
    return reply(kCanaryLoadFailed, e.what());
  }
  CanaryHostServices host;
  std::optional<PluginInstance> instance;
  try {
    instance.emplace(library, host);
  } catch (const std::exception& e) {
    return reply(kCanaryCreateFailed, e.what());
  }
  SelfTestResult result;
  try {
    result = instance->plugin().selfTest();
  } catch (const std::exception& e) {
    return reply(kCanarySelfTestThrew, "selfTest threw: " + std::string(e.what()));
  } catch (...) {
    return reply(kCanarySelfTestThrew, "selfTest threw a non-standard exception");
  }
  if (!result.ok) return reply(kCanarySelfTestFailed, "selfTest failed: " + result.message);
  return reply(kCanaryPassed, "ok version=" + library->version() + " build=" + library->buildId());
}

// ---------------------------------------------------------------- parent

CanaryVerdict runCanaryProcess(const CanaryOptions& options, Kind kind,
                               const std::filesystem::path& library) {
  CanaryVerdict verdict;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    verdict.reason = "canary: pipe failed: " + std::string(std::strerror(errno));
    return verdict;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);

  std::string exe = options.executable.string();
  std::string kindArg(kindName(kind));
  std::string libArg = library.string();
  std::vector<char*> args{exe.data(), const_cast<char*>("canary"), kindArg.data(), libArg.data(),
                          nullptr};
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    verdict.reason = "canary: cannot spawn " + exe + ": " + std::strerror(rc);
    return verdict;
  }

  using Clock = std::chrono::steady_clock;
  auto deadline = Clock::now() + options.timeout;
  auto remainingMs = [&] {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return left.count() > 0 ? static_cast<int>(left.count()) : 0;
  };

  std::string output;
  bool timedOut = false;
  for (;;) {
    struct pollfd pfd {
      fds[0], POLLIN, 0
    };
    int ready = ::poll(&pfd, 1, remainingMs());
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      timedOut = true;
      break;
    }
    char buffer[4096];
    ssize_t got = ::read(fds[0], buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: the child exited or closed stdout
    if (output.size() < 64 * 1024) output.append(buffer, static_cast<std::size_t>(got));
  }
  ::close(fds[0]);

  int status = 0;
  bool reaped = false;
  int waitError = 0;
  while (!timedOut) {
    pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      reaped = true;
      break;
    }
    if (done < 0 && errno != EINTR) {
      waitError = errno;
      break;
    }
    if (remainingMs() == 0) {
      timedOut = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (waitError != 0) {
    // ECHILD: someone else reaped it (SIGCHLD ignored?). The pid may already
    // be reused, so it is not killed, and without an exit status it is no pass.
    verdict.reason = "canary: cannot wait for the child: " + std::string(std::strerror(waitError));
    return verdict;
  }
  if (!reaped) {
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }

  // The verdict is the child's last line: a library's static constructors
  // may have printed before it.
  while (!output.empty() && (output.back() == '\n' || output.back() == '\r')) output.pop_back();
  std::string line =
      output.substr(output.rfind('\n') == std::string::npos ? 0 : output.rfind('\n') + 1);
  if (timedOut) {
    verdict.reason = "canary timed out after " + std::to_string(options.timeout.count()) +
                     " ms (selfTest hung?)";
    return verdict;
  }
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    verdict.reason =
        "canary crashed: signal " + std::to_string(sig) + " (" + (name ? name : "unknown") + ")";
    return verdict;
  }
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code != kCanaryPassed) {
    verdict.reason = line.empty() ? "canary failed with exit code " + std::to_string(code)
                                  : "canary rejected: " + line;
    return verdict;
  }
  // "ok version=<v> build=<id>"
  auto versionAt = line.find("version=");
  auto buildAt = line.find(" build=");
  if (line.rfind("ok ", 0) != 0 || versionAt == std::string::npos || buildAt == std::string::npos ||
      buildAt < versionAt) {
    verdict.reason = "canary passed but printed an unreadable line: " + line;
    return verdict;
  }
  verdict.passed = true;
  verdict.version = line.substr(versionAt + 8, buildAt - versionAt - 8);
  verdict.buildId = line.substr(buildAt + 7);
  return verdict;
}

}  // namespace switchboard::plugin
