#include "worker_link.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <thread>

#include "server_process.h"

namespace switchboard::bench {

WorkerLink::WorkerLink(int inFd, int outFd) : in_(fdopen(inFd, "r")), out_(fdopen(outFd, "w")) {}

WorkerLink::~WorkerLink() {
  if (in_ != nullptr) fclose(in_);
  if (out_ != nullptr) fclose(out_);
}

void WorkerLink::send(const std::string& verb, const ReportFields& fields) {
  std::fprintf(out_, "%s %s\n", verb.c_str(), fields.toLine().c_str());
  std::fflush(out_);
}

void WorkerLink::note(const std::string& text) {
  std::string line = text;
  for (char& c : line)
    if (c == '\n') c = ' ';
  std::fprintf(out_, "note %s\n", line.c_str());
  std::fflush(out_);
}

WorkerLink::Command WorkerLink::next() {
  char line[256];
  if (std::fgets(line, sizeof(line), in_) == nullptr) return {"eof", 0};
  std::string text(line);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  Command command;
  auto space = text.find(' ');
  command.verb = text.substr(0, space);
  if (space != std::string::npos) command.atNs = std::stoll(text.substr(space + 1));
  return command;
}

WorkerProcess::WorkerProcess(std::function<int(WorkerLink&)> body, int cpu) {
  int down[2];
  int up[2];
  if (::pipe2(down, O_CLOEXEC) != 0 || ::pipe2(up, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe failed");
  }
  std::cout.flush();
  std::cerr.flush();
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::close(down[1]);
    ::close(up[0]);
    pinToCpu(cpu);
    int code = 1;
    {
      WorkerLink link(down[0], up[1]);
      try {
        code = body(link);
      } catch (const std::exception& e) {
        link.note(std::string("worker failed: ") + e.what());
      }
    }
    std::_Exit(code);
  }
  ::close(down[0]);
  ::close(up[1]);
  toWorker_ = down[1];
  fromWorker_ = up[0];
}

WorkerProcess::~WorkerProcess() {
  finish(2000);
}

void WorkerProcess::command(const std::string& line) {
  std::string text = line + "\n";
  if (toWorker_ >= 0) (void)!::write(toWorker_, text.data(), text.size());
}

bool WorkerProcess::await(const std::string& verb, ReportFields& fields, int timeoutMs) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (true) {
    auto newline = buffer_.find('\n');
    while (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      if (line.rfind("note ", 0) == 0) {
        std::cerr << "sbbench worker: " << line.substr(5) << "\n";
      } else if (line.rfind(verb, 0) == 0) {
        fields = ReportFields::fromLine(line.substr(verb.size()));
        return true;
      }
      newline = buffer_.find('\n');
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) return false;
    pollfd p{fromWorker_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char chunk[65536];
    ssize_t n = ::read(fromWorker_, chunk, sizeof(chunk));
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

int WorkerProcess::finish(int graceMs) {
  if (pid_ <= 0) return -1;
  if (toWorker_ >= 0) ::close(toWorker_);
  toWorker_ = -1;
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(graceMs);
  while (::waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (fromWorker_ >= 0) ::close(fromWorker_);
  fromWorker_ = -1;
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace switchboard::bench
