// Where the host's log goes and in what shape.
//
// installHostLog replaces spdlog's default logger, through which every room of
// the host logs: to stderr, or to config.logFile rotated by size (the live
// file plus config.logMaxFiles older ones: switchboard.log, switchboard.1.log,
// ...), as text lines or, with log-format json, one JSON object per line:
//   {"time":"2026-01-02T03:04:05.678901Z","level":"info","pid":12,"thread":34,
//    "message":"..."}
// Time is UTC. Every record is flushed as it is written, so a shipper tailing
// the file sees it at once. Call once, from main, before any thread starts;
// throws std::runtime_error with one line when the file cannot be opened.
#pragma once

#include "host_config.h"

namespace switchboard {

void installHostLog(const HostConfig& config);

}  // namespace switchboard
