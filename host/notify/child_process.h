// Running one external program to completion, bounded in time, without a shell.
// Internal to host/notify (the SMS command sink); blocking, so only for a worker thread.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace switchboard::notify {

struct ChildOutcome {
  enum class Kind { exited, signaled, timedOut, spawnFailed };
  Kind kind = Kind::spawnFailed;
  int status = 0;          // exit status, signal number, or errno of the spawn
  std::string stderrLine;  // the first line the program wrote to stderr, if any

  bool succeeded() const { return kind == Kind::exited && status == 0; }
  std::string describe() const;  // "exit status 3: no route", "timed out after 10000 ms", ...
};

// Runs argv[0] (looked up in PATH if it has no '/') with argv, in a process group of its
// own, with this process's environment plus `extraEnvironment` ("NAME=value" entries, which
// replace any inherited variable of the same name). stdin and stdout are /dev/null; stderr
// is captured (only the first line is kept). After `timeout` the whole process group gets
// SIGKILL and the outcome is timedOut. Blocks the calling thread until the child is reaped.
ChildOutcome runChildProcess(const std::vector<std::string>& argv,
                             const std::vector<std::string>& extraEnvironment,
                             std::chrono::milliseconds timeout);

}  // namespace switchboard::notify
