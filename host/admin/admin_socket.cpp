#include "admin/admin_socket.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>

namespace switchboard::admin {

namespace {
// umask is per process: two binds narrowing it at once must not restore each
// other's value.
std::mutex umaskMutex;
}  // namespace

void checkAdminSocketDirectory(const std::filesystem::path& directory) {
  const std::string where = directory.string();
  struct stat info {};
  if (::stat(where.c_str(), &info) != 0) {
    throw std::runtime_error("cannot inspect the admin socket's directory " + where + ": " +
                             std::strerror(errno));
  }
  if (!S_ISDIR(info.st_mode)) {
    throw std::runtime_error("the admin socket's directory " + where + " is not a directory");
  }
  if (info.st_uid != ::geteuid() && info.st_uid != 0) {
    throw std::runtime_error("the admin socket's directory " + where + " belongs to uid " +
                             std::to_string(info.st_uid) +
                             ", not to this user or root: its owner could replace the socket");
  }
  if ((info.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (info.st_mode & S_ISVTX) == 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(info.st_mode & 07777));
    throw std::runtime_error("the admin socket's directory " + where + " (mode " + mode +
                             ") is writable by group or others without the sticky bit: anyone "
                             "could replace the socket; use a directory only its owner can write");
  }
}

std::unique_ptr<net::RpcListener> listenAdminSocket(net::NetworkThread& thread,
                                                    const std::filesystem::path& path,
                                                    net::BootstrapFactory bootstrapFactory) {
  const std::string where = path.string();
  struct stat info {};
  if (::lstat(where.c_str(), &info) == 0 && !S_ISSOCK(info.st_mode)) {
    throw std::runtime_error("admin socket " + where +
                             " exists and is not a socket; remove it or choose another path");
  }
  const std::filesystem::path directory = path.has_parent_path() ? path.parent_path() : ".";
  std::error_code error;
  if (std::filesystem::create_directories(directory, error)) {
    // Made here: only its owner may enter it, whatever the umask.
    ::chmod(directory.c_str(), 0700);
  }
  if (error) {
    throw std::runtime_error("cannot create the admin socket's directory " + directory.string() +
                             ": " + error.message());
  }
  checkAdminSocketDirectory(directory);
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
