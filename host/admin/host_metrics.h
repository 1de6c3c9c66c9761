// The host's metrics, as Prometheus text: what GET /metrics answers.
#pragma once

#include <string>

#include "admin/host_view.h"

namespace switchboard::admin {

// Reads every gauge and counter of the host once and renders them (see
// docs/operations.md for the list). Any thread: every source is thread-safe.
std::string renderHostMetrics(const HostView& host);

}  // namespace switchboard::admin
