// A plugin load or rollback on this node, however it was asked for: by the
// admin socket (AdminServer) or by another node of the cluster
// (cluster::AdminRelay, sbctl plugin load --node).
//
// Both paths run the same steps: the checks below refuse with a KJ FAILED
// exception whose description is one sentence (messaging::refuse) before
// anything changes; the operation itself runs on the OperationWorker (the
// canary may take seconds) and its result comes back to the admin thread as
// the promise's value. Admin thread only. `host` and `worker` must outlive the
// promise (dropping it drops only the answer: the operation still finishes and
// is in the ledger).
#pragma once

#include <kj/async.h>

#include <optional>
#include <string>

#include "admin/host_view.h"
#include "admin/operation_worker.h"
#include "cluster/admin_relay.h"
#include "plugin/plugin_manager.h"

namespace switchboard::admin {

// Loads `path` as a new version of `kind`. With `waitProbation`, resolves only
// once the probation window has closed: the load's result when the new
// version kept serving, else ok false with "probation failed: ..." and the
// reason the host rolled it back.
kj::Promise<plugin::OperationResult> loadOnThisNode(const HostView& host, OperationWorker& worker,
                                                    plugin::Kind kind, const std::string& path,
                                                    const std::string& actor,
                                                    plugin::LoadProgress progress,
                                                    bool waitProbation);

// Back to the previous version (nullopt) or a named version kept loaded.
kj::Promise<plugin::OperationResult> rollbackOnThisNode(const HostView& host,
                                                        OperationWorker& worker, plugin::Kind kind,
                                                        const std::optional<std::string>& version,
                                                        const std::string& actor);

// Answers the plugin requests other nodes forward to this one: each runs
// through loadOnThisNode/rollbackOnThisNode, and a refusal becomes the reply's
// error with the same text the admin socket would give. Made, used and
// destroyed on the admin thread; destroying it drops the answers still owed
// (the requesters report no answer), so the host destroys it before the
// worker.
class RelayedPluginOperations {
 public:
  RelayedPluginOperations(const HostView& host, OperationWorker& worker);

  void run(cluster::PluginRequest request, cluster::AdminRelay::Answer answer);

 private:
  class LogErrors final : public kj::TaskSet::ErrorHandler {
   public:
    void taskFailed(kj::Exception&& exception) override;
  };

  const HostView& host_;
  OperationWorker& worker_;
  LogErrors errors_;
  kj::TaskSet tasks_;
};

}  // namespace switchboard::admin
