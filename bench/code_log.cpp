#include "code_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <string_view>

namespace switchboard::bench {

CodeLog::~CodeLog() {
  if (fd_ >= 0) ::close(fd_);
}

std::optional<std::string> CodeLog::take(const std::string& phone) {
  auto it = codes_.find(phone);
  if (it == codes_.end()) return std::nullopt;
  std::string found = std::move(it->second);
  codes_.erase(it);
  return found;
}

void CodeLog::scan() {
  if (fd_ < 0) fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) return;
  char chunk[65536];
  while (true) {
    ssize_t n = ::read(fd_, chunk, sizeof(chunk));
    if (n <= 0) break;
    pending_.append(chunk, static_cast<size_t>(n));
  }
  static const std::string kMarker = "sms (dev sink) to ";
  size_t start = 0;
  size_t newline;
  while ((newline = pending_.find('\n', start)) != std::string::npos) {
    std::string_view line(pending_.data() + start, newline - start);
    auto at = line.find(kMarker);
    if (at != std::string_view::npos) {
      auto rest = line.substr(at + kMarker.size());
      auto colon = rest.find(": code ");
      if (colon != std::string_view::npos) {
        codes_[std::string(rest.substr(0, colon))] = std::string(rest.substr(colon + 7, 5));
      }
    }
    start = newline + 1;
  }
  pending_.erase(0, start);
}

}  // namespace switchboard::bench
