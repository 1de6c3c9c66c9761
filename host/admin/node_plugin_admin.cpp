// Plugin loads and rollbacks on other nodes: AdminServer's loadPluginOnNodes
// and rollbackPluginOnNodes (this node forwards, cluster::AdminRelay), and
// RelayedPluginOperations (this node answers what another forwarded).
#include <spdlog/spdlog.h>

#include <chrono>

#include "admin/admin_server.h"
#include "admin/admin_wire.h"
#include "admin/plugin_operations.h"
#include "cluster/cluster_node.h"
#include "messaging/field_rules.h"
#include "net/cross_thread_completion.h"

namespace switchboard::admin {

using messaging::refuse;

namespace {

constexpr std::chrono::milliseconds kDefaultNodeTimeout{120000};

struct NodeReplies {
  std::vector<cluster::PluginReply> replies;
  std::string error;
};

// A node's answer carries an operation's outcome field for field; these two
// are the only places that copy it, one way each.
plugin::OperationResult operationOf(const cluster::PluginReply& reply) {
  plugin::OperationResult result;
  result.ok = reply.ok;
  result.error = reply.error;
  result.fromVersion = reply.fromVersion;
  result.toVersion = reply.toVersion;
  result.sha256 = reply.sha256;
  result.pauseUs = reply.pauseUs;
  return result;
}

cluster::PluginReply replyOf(const plugin::OperationResult& result) {
  cluster::PluginReply reply;
  reply.ok = result.ok;
  reply.error = result.error;
  reply.fromVersion = result.fromVersion;
  reply.toVersion = result.toVersion;
  reply.sha256 = result.sha256;
  reply.pauseUs = result.pauseUs;
  return reply;
}

std::string plainText(capnp::Text::Reader text) {
  return std::string(text.cStr(), text.size());
}

// Forwards `request` through this node's relay; refuses what cannot be sent
// (a single node, a degraded one, a node name not in the registry).
kj::Promise<NodeReplies> forward(const HostView& host, capnp::Text::Reader node,
                                 cluster::PluginRequest request, std::uint32_t timeoutMs) {
  if (host.cluster == nullptr) {
    refuse("this host is a single node: --node needs a host started with --cluster");
  }
  std::string target = plainText(node);
  if (target.empty()) refuse("no node given: a node name or \"all\"");
  request.actor = "admin via " + host.facts.node;
  auto timeout = timeoutMs == 0 ? kDefaultNodeTimeout : std::chrono::milliseconds(timeoutMs);
  auto pending = net::makeCompletion<NodeReplies>();
  host.cluster->adminRelay().send(
      target, std::move(request), timeout,
      [completion = pending.completion](std::vector<cluster::PluginReply> replies,
                                        std::string error) {
        completion.complete(NodeReplies{std::move(replies), std::move(error)});
      });
  return pending.promise.then([](NodeReplies replies) {
    if (!replies.error.empty()) refuse(replies.error);
    return replies;
  });
}

// Forwards `request` and answers `context` with one NodeOperation per node.
template <class Context>
kj::Promise<void> answerPerNode(const HostView& host, Context context, capnp::Text::Reader node,
                                cluster::PluginRequest request, std::uint32_t timeoutMs) {
  return forward(host, node, std::move(request), timeoutMs)
      .then([context](NodeReplies replies) mutable {
        auto out = context.getResults().initResults(static_cast<unsigned>(replies.replies.size()));
        for (unsigned i = 0; i < replies.replies.size(); ++i) {
          const auto& reply = replies.replies[i];
          out[i].setNode(text(reply.node));
          out[i].setAnswered(reply.answered);
          fillOperation(out[i].initResult(), operationOf(reply));
        }
      });
}

}  // namespace

// ---------------------------------------------------------------- forwarding

kj::Promise<void> AdminServer::loadPluginOnNodes(LoadPluginOnNodesContext context) {
  auto params = context.getParams();
  requireKind(params.getKind());
  cluster::PluginRequest request;
  request.operation = cluster::PluginRequest::Operation::load;
  request.kind = plainText(params.getKind());
  request.path = plainText(params.getPath());
  if (request.path.empty()) refuse("no library path given");
  request.waitProbation = params.getWaitProbation();
  return answerPerNode(host_, context, params.getNode(), std::move(request), params.getTimeoutMs());
}

kj::Promise<void> AdminServer::rollbackPluginOnNodes(RollbackPluginOnNodesContext context) {
  auto params = context.getParams();
  requireKind(params.getKind());
  cluster::PluginRequest request;
  request.operation = cluster::PluginRequest::Operation::rollback;
  request.kind = plainText(params.getKind());
  request.version = plainText(params.getVersion());
  return answerPerNode(host_, context, params.getNode(), std::move(request), params.getTimeoutMs());
}

// ---------------------------------------------------------------- answering

RelayedPluginOperations::RelayedPluginOperations(const HostView& host, OperationWorker& worker)
    : host_(host), worker_(worker), tasks_(errors_) {}

void RelayedPluginOperations::LogErrors::taskFailed(kj::Exception&& exception) {
  spdlog::warn("admin: a plugin request from another node failed: {}",
               exception.getDescription().cStr());
}

void RelayedPluginOperations::run(cluster::PluginRequest request,
                                  cluster::AdminRelay::Answer answer) {
  const HostView& host = host_;
  OperationWorker& worker = worker_;
  auto operation = kj::evalNow([&host, &worker, &request]() {
    capnp::Text::Reader kindName(request.kind.c_str(), request.kind.size());
    plugin::Kind kind = requireKind(kindName);
    if (request.operation == cluster::PluginRequest::Operation::load) {
      spdlog::info("admin: loading {} from {} as asked by {}", request.kind, request.path,
                   request.actor);
      return loadOnThisNode(host, worker, kind, request.path, request.actor, {},
                            request.waitProbation);
    }
    std::optional<std::string> version;
    if (!request.version.empty()) version = request.version;
    spdlog::info("admin: rolling back {} as asked by {}", request.kind, request.actor);
    return rollbackOnThisNode(host, worker, kind, version, request.actor);
  });
  tasks_.add(operation.then([answer](plugin::OperationResult result) { answer(replyOf(result)); },
                            [answer](kj::Exception&& exception) {
                              // A refusal: the same sentence the admin socket would give.
                              cluster::PluginReply reply;
                              reply.error = exception.getDescription().cStr();
                              answer(std::move(reply));
                            }));
}

}  // namespace switchboard::admin
