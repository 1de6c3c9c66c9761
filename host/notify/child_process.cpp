#include "notify/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace switchboard::notify {

namespace {

// Closes a file descriptor on every exit path.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd = -1) : fd_(fd) {}
  ~FileDescriptor() { reset(); }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

std::string variableName(const std::string& entry) {
  return entry.substr(0, entry.find('='));
}

// The child's environment: ours, minus whatever `extra` overrides, plus `extra`.
std::vector<std::string> childEnvironment(const std::vector<std::string>& extra) {
  std::vector<std::string> out;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string text(*entry);
    bool overridden = false;
    for (const auto& e : extra) overridden = overridden || variableName(e) == variableName(text);
    if (!overridden) out.push_back(std::move(text));
  }
  out.insert(out.end(), extra.begin(), extra.end());
  return out;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Keeps the first line of what the child writes to stderr and discards the rest, so a
// chatty program cannot grow our memory.
class FirstLine {
 public:
  void append(const char* data, std::size_t size) {
    if (complete_) return;
    for (std::size_t i = 0; i < size; ++i) {
      if (data[i] == '\n' || line_.size() >= 512) {
        complete_ = true;
        return;
      }
      line_.push_back(data[i]);
    }
  }
  std::string take() {
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    return std::move(line_);
  }

 private:
  std::string line_;
  bool complete_ = false;
};

void drain(int fd, FirstLine& line, bool& open) {
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) {
      line.append(buffer, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) open = false;
    return;
  }
}

}  // namespace

std::string ChildOutcome::describe() const {
  std::string text;
  switch (kind) {
    case Kind::exited:
      text = status < 0 ? "exit status unknown (reaped elsewhere)"
                        : "exit status " + std::to_string(status);
      break;
    case Kind::signaled:
      text = "killed by signal " + std::to_string(status);
      break;
    case Kind::timedOut:
      text = "timed out after " + std::to_string(status) + " ms; process group killed";
      break;
    case Kind::spawnFailed:
      text = std::string("could not start: ") + std::strerror(status);
      break;
  }
  if (!stderrLine.empty()) text += ": " + stderrLine;
  return text;
}

ChildOutcome runChildProcess(const std::vector<std::string>& argv,
                             const std::vector<std::string>& extraEnvironment,
                             std::chrono::milliseconds timeout) {
  ChildOutcome outcome;
  if (argv.empty() || argv[0].empty()) {
    outcome.status = EINVAL;
    return outcome;
  }

  // O_CLOEXEC on both ends: a child spawned concurrently by another thread of the host must
  // not inherit our write end, or we would never see EOF.
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC | O_NONBLOCK) != 0) {
    outcome.status = errno;
    return outcome;
  }
  FileDescriptor readEnd(ends[0]);
  FileDescriptor writeEnd(ends[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, writeEnd.get(), 2);  // dup2 clears FD_CLOEXEC

  // Its own process group, so a time-out kills what the command started too; default
  // signal dispositions and an empty mask, whatever the host's threads have set.
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setpgroup(&attributes, 0);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attributes, &none);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGCHLD, SIGUSR1, SIGUSR2}) {
    sigaddset(&defaults, sig);
  }
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setflags(&attributes,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<std::string> args = argv;
  std::vector<std::string> environment = childEnvironment(extraEnvironment);
  auto argPointers = pointers(args);
  auto envPointers = pointers(environment);
  pid_t pid = -1;
  int spawnError = ::posix_spawnp(&pid, argPointers[0], &actions, &attributes, argPointers.data(),
                                  envPointers.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  writeEnd.reset();
  if (spawnError != 0) {
    outcome.status = spawnError;
    return outcome;
  }

  // Poll in short slices rather than waiting for EOF: a program may exit while something
  // it started keeps stderr open, or close stderr and keep running.
  FirstLine line;
  bool stderrOpen = true;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    pollfd fd{readEnd.get(), POLLIN, 0};
    ::poll(stderrOpen ? &fd : nullptr, stderrOpen ? 1 : 0, 20);
    if (stderrOpen) drain(readEnd.get(), line, stderrOpen);
    pid_t reaped = ::waitpid(pid, &status, WNOHANG);
    if (reaped == pid) break;
    if (reaped < 0 && errno != EINTR) {
      // Someone else reaped it (SIGCHLD ignored, or a waitpid(-1) elsewhere).
      outcome.kind = ChildOutcome::Kind::exited;
      outcome.status = -1;
      outcome.stderrLine = line.take();
      return outcome;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(-pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      if (stderrOpen) drain(readEnd.get(), line, stderrOpen);
      outcome.kind = ChildOutcome::Kind::timedOut;
      outcome.status = static_cast<int>(timeout.count());
      outcome.stderrLine = line.take();
      return outcome;
    }
  }
  if (stderrOpen) drain(readEnd.get(), line, stderrOpen);
  outcome.stderrLine = line.take();
  if (WIFEXITED(status)) {
    outcome.kind = ChildOutcome::Kind::exited;
    outcome.status = WEXITSTATUS(status);
  } else {
    outcome.kind = ChildOutcome::Kind::signaled;
    outcome.status = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  }
  return outcome;
}

}  // namespace switchboard::notify
