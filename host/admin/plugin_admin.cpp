// AdminServer's plugin calls (status, load with progress, rollback, ledger) and
// the load and rollback every path runs on this node (plugin_operations.h).
#include <algorithm>
#include <filesystem>
#include <functional>
#include <memory>

#include <kj/vector.h>

#include "admin/admin_server.h"
#include "admin/admin_wire.h"
#include "admin/plugin_operations.h"
#include "messaging/field_rules.h"
#include "net/asio_timer.h"
#include "net/cross_thread_completion.h"
#include "net/network_thread.h"
#include "plugin/plugin_manager.h"

namespace switchboard::admin {

using messaging::refuse;

namespace {

// Relays load steps to the caller's PluginProgress on the admin thread, in
// the order they happened (Cap'n Proto keeps calls on one capability in
// order). Owned by the loadPlugin call's continuation, on the admin thread;
// the worker side only holds a weak_ptr and locks it there, so the
// capability is never touched or released off its thread.
class ProgressRelay {
 public:
  explicit ProgressRelay(kj::Maybe<proto::PluginProgress::Client> client)
      : client_(kj::mv(client)) {}

  void step(const std::string& name, const std::string& detail) {
    KJ_IF_MAYBE (client, client_) {
      auto request = client->stepRequest();
      request.setName(text(name));
      request.setDetail(text(detail));
      // A caller that stops listening must not fail the load's answer.
      sent_.add(request.send().ignoreResult().catch_([](kj::Exception&&) {}));
    }
  }
  // Resolves once every step sent so far has been answered.
  kj::Promise<void> answered() { return kj::joinPromises(sent_.releaseAsArray()); }

 private:
  kj::Maybe<proto::PluginProgress::Client> client_;
  kj::Vector<kj::Promise<void>> sent_;
};

}  // namespace

kj::Promise<void> AdminServer::plugins(PluginsContext context) {
  auto kinds = host_.plugins.status();
  auto out = context.getResults().initPlugins(static_cast<unsigned>(kinds.size()));
  for (unsigned i = 0; i < kinds.size(); ++i) fillPluginStatus(out[i], kinds[i]);
  return kj::READY_NOW;
}

// ---------------------------------------------------------------- on this node

namespace {

// Runs `operation` on the worker and brings its result back to the admin
// thread, after anything the operation posted there before it finished.
kj::Promise<plugin::OperationResult> onWorker(net::NetworkThread& thread, OperationWorker& worker,
                                              std::function<plugin::OperationResult()> operation) {
  auto pending = net::makeCompletion<plugin::OperationResult>();
  worker.post([&thread, operation = std::move(operation), completion = pending.completion] {
    plugin::OperationResult result;
    try {
      result = operation();
    } catch (const std::exception& e) {
      result.error = e.what();
    }
    // Through the same queue as the load's steps, so the answer follows them.
    thread.post([completion, result = std::move(result)]() mutable {
      completion.complete(std::move(result));
    });
  });
  return kj::mv(pending.promise);
}

// After a load that put `loaded.toVersion` on probation: resolves once the
// window has closed. The window is read again every quarter second at most, so
// a breach (the manager rolls back by itself) is seen soon after it happens.
kj::Promise<plugin::OperationResult> probationOutcome(const HostView& host, OperationWorker& worker,
                                                      plugin::Kind kind,
                                                      plugin::OperationResult loaded,
                                                      kj::Timer& timer) {
  auto status = host.plugins.status(kind);
  if (status.inProbation && status.currentVersion == loaded.toVersion) {
    std::int64_t waitMs = std::clamp<std::int64_t>(status.probationRemainingMs, 10, 250);
    return timer.afterDelay(waitMs * kj::MILLISECONDS)
        .then([&host, &worker, kind, loaded = std::move(loaded), &timer]() mutable {
          return probationOutcome(host, worker, kind, std::move(loaded), timer);
        });
  }
  // Closed. A rollback the window asked for may still be queued: let the
  // manager finish what it has, then read who serves.
  plugin::PluginManager& manager = host.plugins;
  return onWorker(host.adminThread, worker, [&manager, kind, loaded = std::move(loaded)]() {
    manager.waitIdle();
    auto now = manager.status(kind);
    if (now.currentVersion == loaded.toVersion) return loaded;
    plugin::OperationResult failed = loaded;
    failed.ok = false;
    auto rows = manager.ledger(kind, 1);
    failed.error = "probation failed: " + std::string(plugin::kindName(kind)) + " " +
                   loaded.toVersion + " was rolled back to " + now.currentVersion.value_or("none") +
                   (rows.empty() ? std::string() : " (" + rows[0].reason + ")");
    return failed;
  });
}

}  // namespace

kj::Promise<plugin::OperationResult> loadOnThisNode(const HostView& host, OperationWorker& worker,
                                                    plugin::Kind kind, const std::string& path,
                                                    const std::string& actor,
                                                    plugin::LoadProgress progress,
                                                    bool waitProbation) {
  if (path.empty()) refuse("no library path given");
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) refuse("no file " + path);
  plugin::PluginManager& manager = host.plugins;
  auto loading = onWorker(host.adminThread, worker,
                          [&manager, kind, path, actor, progress = std::move(progress)] {
                            return manager.load(kind, path, actor, progress);
                          });
  if (!waitProbation) return loading;
  return loading.then([&host, &worker, kind](plugin::OperationResult result) {
    if (!result.ok) return kj::Promise<plugin::OperationResult>(std::move(result));
    auto timer = kj::heap<net::AsioTimer>(host.adminThread.ioContext());
    auto& timerRef = *timer;
    return probationOutcome(host, worker, kind, std::move(result), timerRef).attach(kj::mv(timer));
  });
}

kj::Promise<plugin::OperationResult> rollbackOnThisNode(const HostView& host,
                                                        OperationWorker& worker, plugin::Kind kind,
                                                        const std::optional<std::string>& version,
                                                        const std::string& actor) {
  if (version) {
    auto status = host.plugins.status(kind);
    bool loaded = false;
    std::string known;
    for (const auto& v : status.versions) {
      loaded = loaded || v.version == *version;
      known += (known.empty() ? "" : ", ") + v.version;
    }
    if (!loaded) {
      refuse("version " + *version + " of " + std::string(plugin::kindName(kind)) +
             " is not loaded (loaded: " + (known.empty() ? "none" : known) + ")");
    }
  }
  plugin::PluginManager& manager = host.plugins;
  return onWorker(host.adminThread, worker, [&manager, kind, version, actor] {
    return manager.rollback(kind, version, actor);
  });
}

// ---------------------------------------------------------------- the admin socket

kj::Promise<void> AdminServer::loadPlugin(LoadPluginContext context) {
  auto params = context.getParams();
  plugin::Kind kind = requireKind(params.getKind());
  std::string path(params.getPath().cStr(), params.getPath().size());

  kj::Maybe<proto::PluginProgress::Client> client;
  if (params.hasProgress()) client = params.getProgress();
  auto relay = std::make_shared<ProgressRelay>(kj::mv(client));
  std::weak_ptr<ProgressRelay> weakRelay = relay;
  net::NetworkThread& thread = host_.adminThread;
  plugin::LoadProgress progress = [&thread, weakRelay](std::string_view step,
                                                       std::string_view detail) {
    thread.post([weakRelay, step = std::string(step), detail = std::string(detail)] {
      if (auto relay = weakRelay.lock()) relay->step(step, detail);
    });
  };

  return loadOnThisNode(host_, worker_, kind, path, "admin", std::move(progress),
                        params.getWaitProbation())
      .then([context, relay](plugin::OperationResult result) mutable {
        relay->step(result.ok ? "done" : "refused",
                    result.ok ? result.fromVersion + " -> " + result.toVersion : result.error);
        fillOperation(context.getResults().initResult(), result);
        return relay->answered().attach(kj::mv(relay));
      });
}

kj::Promise<void> AdminServer::rollbackPlugin(RollbackPluginContext context) {
  auto params = context.getParams();
  plugin::Kind kind = requireKind(params.getKind());
  std::optional<std::string> version;
  if (params.getVersion().size() > 0) {
    version = std::string(params.getVersion().cStr(), params.getVersion().size());
  }
  return rollbackOnThisNode(host_, worker_, kind, version, "admin")
      .then([context](plugin::OperationResult result) mutable {
        fillOperation(context.getResults().initResult(), result);
      });
}

kj::Promise<void> AdminServer::pluginHistory(PluginHistoryContext context) {
  auto params = context.getParams();
  std::optional<plugin::Kind> kind;
  if (params.getKind().size() > 0) kind = requireKind(params.getKind());
  auto rows = host_.plugins.ledger(kind, requireLimit(params.getLimit(), 100));
  auto out = context.getResults().initEntries(static_cast<unsigned>(rows.size()));
  for (unsigned i = 0; i < rows.size(); ++i) {
    const auto& row = rows[i];
    out[i].setId(row.id);
    out[i].setAtMs(row.atMs);
    out[i].setActor(text(row.actor));
    out[i].setKind(text(row.kind));
    out[i].setFromVersion(text(row.fromVersion));
    out[i].setToVersion(text(row.toVersion));
    out[i].setSha256(text(row.sha256));
    out[i].setPauseUs(row.pauseUs);
    out[i].setResult(text(row.result));
    out[i].setReason(text(row.reason));
  }
  return kj::READY_NOW;
}

}  // namespace switchboard::admin
