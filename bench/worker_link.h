// The coordinator and its worker processes talk in lines over two pipes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "report_fields.h"

namespace switchboard::bench {

// The worker's end. Worker to coordinator: "ready k=v ...", "result k=v ...", "note TEXT".
// Coordinator to worker: "go T0", "mark T", "stop" (T in CLOCK_MONOTONIC ns). Blocking,
// used from the worker's main thread only (the load runs on its network thread).
class WorkerLink {
 public:
  struct Command {
    std::string verb;  // go, mark, stop, or eof
    std::int64_t atNs = 0;
  };

  WorkerLink(int inFd, int outFd);
  ~WorkerLink();
  WorkerLink(const WorkerLink&) = delete;
  WorkerLink& operator=(const WorkerLink&) = delete;

  void send(const std::string& verb, const ReportFields& fields);
  void note(const std::string& text);
  Command next();

 private:
  FILE* in_;
  FILE* out_;
};

// The coordinator's handle on one forked worker. The child runs `body(link)` and exits
// with its return value; the coordinator must not hold threads when forking.
class WorkerProcess {
 public:
  WorkerProcess(std::function<int(WorkerLink&)> body, int cpu);
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  void command(const std::string& line);
  // Reads lines until one starting with `verb` ("ready", "result"); notes go to stderr.
  // Returns false on EOF (the worker died) or when `timeoutMs` passes.
  bool await(const std::string& verb, ReportFields& fields, int timeoutMs);
  // Waits for the exit (killing it after `graceMs`); returns the exit code or -1.
  int finish(int graceMs);

 private:
  pid_t pid_ = -1;
  int toWorker_ = -1;
  int fromWorker_ = -1;
  std::string buffer_;
};

}  // namespace switchboard::bench
