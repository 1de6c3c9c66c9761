// A rolling plugin upgrade across a cluster (sbctl cluster upgrade): load a
// new version node by node through one node's admin socket, wait for each
// node's probation window to close before moving on, and stop at the first
// node where it fails.
//
// On a failure that node is left on the version it served before: a refused
// load changed nothing, a failed probation was rolled back by the node itself,
// and a node that did not answer but lists the new version in the registry is
// told to roll back to the version it had. The nodes upgraded before it keep
// the new version (the report names them); nodes after it are not touched.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "admin_client.h"

namespace switchboard::ctl {

struct RollingUpgradeOptions {
  std::string kind;
  std::string path;                // on every node's machine
  std::vector<std::string> nodes;  // in this order; empty: every node in the registry, by name
  std::chrono::milliseconds nodeTimeout{120000};  // per node: load, canary and probation
};

struct RollingUpgradeStep {
  std::string node;
  std::string before;  // the version the node served before (from the registry)
  NodeOperation load;
  std::optional<NodeOperation> rollback;  // sent only after a load with no answer
};

struct RollingUpgradeReport {
  bool ok = false;
  std::vector<RollingUpgradeStep> steps;  // the nodes tried, in order
  std::vector<std::string> notReached;    // the nodes after the one that failed
};

// Throws AdminError before any load when the host is not a connected cluster
// node, or a named node is not in the registry. `onStep` (may be empty) hears
// each node's step as soon as it is done.
RollingUpgradeReport rollingUpgrade(AdminClient& admin, const RollingUpgradeOptions& options,
                                    const std::function<void(const RollingUpgradeStep&)>& onStep);

// "routing" in "auth=1.0.0 routing=1.1.0 ..." -> "1.1.0"; empty when absent.
std::string versionOf(const std::string& pluginVersions, const std::string& kind);

}  // namespace switchboard::ctl
