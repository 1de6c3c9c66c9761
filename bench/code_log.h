// Registration codes as the host's development SMS sink logs them.
#pragma once

#include <map>
#include <optional>
#include <string>

namespace switchboard::bench {

// Reads the host's log, where the development SMS sink prints "sms (dev sink) to PHONE: code
// CODE: ...", and keeps the newest code per phone until it is taken. Reads only what the
// file gained since the last call; never blocks (the caller polls while phones wait).
// Owns its descriptor. Single-threaded.
class CodeLog {
 public:
  explicit CodeLog(std::string path) : path_(std::move(path)) {}
  ~CodeLog();
  CodeLog(const CodeLog&) = delete;
  CodeLog& operator=(const CodeLog&) = delete;

  // Reads what the log gained since the last scan (one read() when it gained nothing).
  void scan();
  // Hands out (and forgets) `phone`'s code, if a scan found one.
  std::optional<std::string> take(const std::string& phone);

 private:
  std::string path_;
  int fd_ = -1;
  std::string pending_;  // the last line, until its newline comes
  std::map<std::string, std::string> codes_;
};

}  // namespace switchboard::bench
