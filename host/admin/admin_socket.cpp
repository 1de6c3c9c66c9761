#include "admin/admin_socket.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <stdexcept>

namespace switchboard::admin {

namespace {
// umask is per process: two binds narrowing it at once must not restore each
// other's value.
std::mutex umaskMutex;
}  // namespace

std::unique_ptr<net::RpcListener> listenAdminSocket(net::NetworkThread& thread,
                                                    const std::filesystem::path& path,
                                                    net::BootstrapFactory bootstrapFactory) {
  const std::string where = path.string();
  struct stat info {};
  if (::lstat(where.c_str(), &info) == 0 && !S_ISSOCK(info.st_mode)) {
    throw std::runtime_error("admin socket " + where +
                             " exists and is not a socket; remove it or choose another path");
  }
  if (path.has_parent_path()) {
    std::error_code error;
    std::filesystem::create_directories(path.parent_path(), error);
    if (error) {
      throw std::runtime_error("cannot create the admin socket's directory " +
                               path.parent_path().string() + ": " + error.message());
    }
  }
  // Endpoint::parse takes a text with a '/' as a Unix path; "admin.sock" alone has none.
  std::string endpoint = where.find('/') == std::string::npos ? "unix:" + where : where;

  std::unique_ptr<net::RpcListener> listener;
  {
    std::lock_guard lock(umaskMutex);
    mode_t previous = ::umask(0177);
    try {
      listener = std::make_unique<net::RpcListener>(std::vector<net::NetworkThread*>{&thread},
                                                    endpoint, std::move(bootstrapFactory));
    } catch (const std::exception& e) {
      ::umask(previous);
      throw std::runtime_error(std::string("admin socket: ") + e.what());
    }
    ::umask(previous);
  }
  if (::chmod(where.c_str(), 0600) != 0) {
    std::string reason = std::strerror(errno);
    listener->stop();
    throw std::runtime_error("cannot set the admin socket " + where + " to mode 0600: " + reason);
  }
  return listener;
}

}  // namespace switchboard::admin
