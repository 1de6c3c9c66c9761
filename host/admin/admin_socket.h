// The admin Unix socket: where sbctl and the Python module reach the host.
#pragma once

#include <filesystem>
#include <memory>

#include "net/rpc_listener.h"

namespace switchboard::admin {

// Binds `path` as a Unix socket served by an RpcListener on `thread`, with
// mode 0600: only the socket's owner may connect, which is the whole of admin
// authentication. The parent directory is created if missing. The umask is
// narrowed around the bind (so the socket never exists with a wider mode) and
// the mode is set again explicitly before anyone could have connected with
// weaker rights.
//
// The socket's directory is checked first (checkAdminSocketDirectory); one
// that does not exist is created with mode 0700.
//
// Throws std::runtime_error with one sentence when `path` exists and is not
// a socket (it is never removed), when the directory fails its check, when
// another host answers on it, or when the bind fails. A stale socket nobody
// answers on is replaced.
// The socket's mode keeps other users out only while nobody else can replace
// the socket: throws std::runtime_error (one sentence) unless `directory` is a
// directory owned by this process's user or root, and not writable by group or
// others (unless sticky, as /tmp is: then only owners may remove entries).
void checkAdminSocketDirectory(const std::filesystem::path& directory);

std::unique_ptr<net::RpcListener> listenAdminSocket(net::NetworkThread& thread,
                                                    const std::filesystem::path& path,
                                                    net::BootstrapFactory bootstrapFactory);

}  // namespace switchboard::admin
