// The Admin capability (proto/admin.capnp): what sbctl and the Python module
// call over the admin socket.
#pragma once

#include "admin/host_view.h"
#include "admin/operation_worker.h"
#include "admin/user_admin.h"
#include "switchboard/proto/admin.capnp.h"

namespace switchboard::admin {

// One instance per admin connection, living on the admin network thread
// (HostView::adminThread), where every call runs. Each call validates its
// input first and refuses with a KJ FAILED exception whose description is one
// sentence (messaging::refuse); a refused call changed nothing.
//
// Nothing here blocks the thread: store reads are quick pooled reads; store
// writes resolve through the writer's completion; plugin loads and rollbacks
// run on the OperationWorker and come back by a post to this thread, after
// the progress steps they caused (same thread, same FIFO). If the connection
// goes while an operation runs, the operation still finishes (and is in the
// ledger); only its answer is dropped.
//
// `host` and `worker` must outlive every AdminServer (the host stops the admin
// listener before destroying them).
class AdminServer final : public proto::Admin::Server {
 public:
  AdminServer(const HostView& host, OperationWorker& worker);

 protected:
  kj::Promise<void> status(StatusContext context) override;
  kj::Promise<void> plugins(PluginsContext context) override;
  kj::Promise<void> loadPlugin(LoadPluginContext context) override;
  kj::Promise<void> rollbackPlugin(RollbackPluginContext context) override;
  kj::Promise<void> pluginHistory(PluginHistoryContext context) override;
  kj::Promise<void> sessions(SessionsContext context) override;
  kj::Promise<void> session(SessionContext context) override;
  kj::Promise<void> kick(KickContext context) override;
  kj::Promise<void> queues(QueuesContext context) override;
  kj::Promise<void> users(UsersContext context) override;
  kj::Promise<void> user(UserContext context) override;
  kj::Promise<void> deleteUser(DeleteUserContext context) override;
  kj::Promise<void> revokeKey(RevokeKeyContext context) override;
  kj::Promise<void> outbox(OutboxContext context) override;
  kj::Promise<void> stats(StatsContext context) override;
  kj::Promise<void> broadcast(BroadcastContext context) override;
  kj::Promise<void> cluster(ClusterContext context) override;  // cluster_admin.cpp
  // node_plugin_admin.cpp: forwarded to other nodes over NATS.
  kj::Promise<void> loadPluginOnNodes(LoadPluginOnNodesContext context) override;
  kj::Promise<void> rollbackPluginOnNodes(RollbackPluginOnNodesContext context) override;

 private:
  const HostView& host_;
  OperationWorker& worker_;
  UserAdmin users_;
};

}  // namespace switchboard::admin
