#include "host_process.h"

#include <capnp/schema.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <thread>

#include "admin/admin_server.h"
#include "admin/admin_socket.h"
#include "admin/host_metrics.h"
#include "admin/metrics_server.h"
#include "admin/operation_worker.h"
#include "admin/plugin_operations.h"
#include "cluster/cluster_node.h"
#include "messaging/gateway_server.h"
#include "messaging/messaging_service.h"
#include "net/direct_client.h"
#include "net/network_thread.h"
#include "net/rpc_listener.h"
#include "net/tls_context.h"
#include "notify/push_sink.h"
#include "notify/sms_sink.h"
#include "plugin/plugin_host_services.h"
#include "plugin/plugin_manager.h"
#include "session/session_table.h"
#include "store/store.h"
#include "web/web_server.h"

namespace switchboard {

using plugin::Kind;

namespace {

// How long sessions get to hear "server shutting down" before connections close.
constexpr auto kShutdownGrace = std::chrono::milliseconds(300);
constexpr auto kExpirySweepInterval = std::chrono::minutes(1);
std::filesystem::path executablePath() {
  std::error_code error;
  auto path = std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? std::filesystem::path() : path;
}

plugin::PluginManagerOptions pluginOptions(const HostConfig& config) {
  plugin::PluginManagerOptions options;
  options.dataDir = config.dataDir;
  options.canary.executable = executablePath();
  options.canary.timeout = std::chrono::milliseconds(config.canaryTimeoutMs);
  options.probationWindow = std::chrono::seconds(config.probationSeconds);
  options.probationErrorThreshold = config.probationErrorThreshold;
  options.keepVersions = config.keepVersions;
  for (const auto& [kindName, settings] : config.pluginSettings) {
    auto kind = plugin::parseKind(kindName);
    if (!kind) continue;  // rejected when the config was parsed
    for (const auto& [key, value] : settings) options.settings[*kind].push_back({key, value});
  }
  return options;
}

}  // namespace

std::filesystem::path defaultWebRoot() {
  auto exe = executablePath();
  if (exe.empty()) return {};
  // The build tree (build/web/public), then an installed tree (PREFIX/share/switchboard/web).
  const auto prefix = exe.parent_path().parent_path();
  for (const auto& dir : {prefix / "web" / "public", prefix / "share" / "switchboard" / "web"}) {
    std::error_code error;
    if (std::filesystem::is_regular_file(dir / "index.html", error)) return dir;
  }
  return {};
}

std::filesystem::path defaultPluginDir() {
  auto exe = executablePath();
  if (exe.empty()) return {};
  // The build tree (build/host/switchboard, build/plugins), then an installed
  // tree (PREFIX/bin/switchboard, PREFIX/lib/switchboard/plugins).
  const auto prefix = exe.parent_path().parent_path();
  for (const auto& dir : {prefix / "plugins", prefix / SWITCHBOARD_INSTALL_PLUGINDIR}) {
    std::error_code error;
    if (std::filesystem::is_directory(dir, error)) return dir;
  }
  return {};
}

// Declared in the order they are built; destroyed in reverse.
struct HostProcess::Parts {
  std::unique_ptr<store::Store> store;
  std::vector<std::unique_ptr<net::NetworkThread>> threads;
  std::unique_ptr<plugin::PluginHostServices> pluginServices;
  std::unique_ptr<plugin::PluginManager> plugins;
  std::unique_ptr<notify::SmsSink> sms;
  std::unique_ptr<notify::PushSink> push;
  session::SessionTable sessions;
  std::unique_ptr<messaging::MessagingService> messaging;
  std::unique_ptr<net::RpcListener> listener;
  std::unique_ptr<web::WebServer> web;
  std::unique_ptr<cluster::ClusterNode> cluster;  // only with --cluster
  std::unique_ptr<admin::HostView> adminView;
  std::unique_ptr<admin::OperationWorker> adminWorker;
  std::unique_ptr<admin::RelayedPluginOperations> relayedPlugins;  // admin thread; with --cluster
  std::unique_ptr<net::RpcListener> adminListener;
  std::unique_ptr<admin::MetricsServer> metrics;
  asio::io_context signals;  // run() waits here
  // SIGHUP, SIGINT and SIGTERM are caught from construction on, so one sent as soon as
  // the host answers (its admin socket exists before run()) waits for run() instead of
  // killing the process without its clean shutdown.
  std::unique_ptr<asio::signal_set> hangup;
  std::unique_ptr<asio::signal_set> stop;
};

HostProcess::HostProcess(HostConfig config)
    : config_(std::move(config)), live_(config_), parts_(new Parts) {
  Parts& p = *parts_;
  p.hangup = std::make_unique<asio::signal_set>(p.signals, SIGHUP);
  p.stop = std::make_unique<asio::signal_set>(p.signals, SIGINT, SIGTERM);
  try {
    store::StoreOptions storeOptions;
    storeOptions.dataDir = config_.dataDir;
    p.store = store::Store::open(storeOptions);
  } catch (const std::exception& e) {
    throw HostStartError(e.what());
  }

  unsigned threads = config_.threads != 0 ? config_.threads : std::thread::hardware_concurrency();
  for (unsigned i = 0; i < std::max(1u, threads); ++i) {
    p.threads.push_back(std::make_unique<net::NetworkThread>("net" + std::to_string(i)));
    p.threads.back()->start();
  }

  p.pluginServices = std::make_unique<plugin::PluginHostServices>();
  p.plugins =
      std::make_unique<plugin::PluginManager>(pluginOptions(config_), *p.pluginServices, *p.store);
  loadInitialPlugins();

  try {
    p.sms = notify::makeSmsSink(config_.smsCommand.empty()
                                    ? std::vector<std::string>{}
                                    : std::vector<std::string>{config_.smsCommand});
    p.push = notify::makePushSink(config_.pushWebhook);
  } catch (const std::exception& e) {
    throw HostStartError(e.what());
  }

  messaging::MessagingOptions options;
  options.version = SWITCHBOARD_VERSION;
  options.nodeName = config_.nodeName;
  options.limits.maxQueue = config_.sessionQueueLimit;
  options.limits.alertQueue = config_.sessionQueueAlert;
  options.limits.stallTimeout = std::chrono::milliseconds(config_.sessionStallMs);
  options.limits.durableAfter = std::chrono::milliseconds(config_.durableAfterMs);
  std::vector<net::NetworkThread*> threadPointers;
  for (auto& t : p.threads) threadPointers.push_back(t.get());
  p.messaging = std::make_unique<messaging::MessagingService>(
      options, *p.store, *p.plugins, p.sessions, threadPointers, *p.sms, *p.push,
      [this](std::size_t threadIndex, std::uint64_t connectionId) {
        if (web::WebServer::ownsConnection(connectionId)) {
          if (parts_->web) parts_->web->disconnect(threadIndex, connectionId);
        } else if (parts_->listener) {
          parts_->listener->disconnect(threadIndex, connectionId);
        }
      });

  // TCP phones and web phones get the same bootstrap: a Gateway on the messaging service.
  // A successful Gateway.login lifts the connection's login deadline through
  // info.listener (null for web phones), not parts_->listener: a phone that
  // reconnects at once can log in before the listener's constructor has returned.
  auto gateway = [this](const net::ConnectionInfo& info) {
    messaging::ConnectionContext connection{info.threadIndex, info.connectionId, info.peer};
    return net::serveDirectly<proto::Gateway>(
        kj::heap<messaging::GatewayServer>(*parts_->messaging, connection, info.listener));
  };
  net::ConnectionLimits phoneLimits;
  phoneLimits.loginDeadline = std::chrono::milliseconds(config_.loginDeadlineMs);
  phoneLimits.maxConnectionsPerPeer = config_.maxConnectionsPerPeer;
  phoneLimits.holdBootstrap = false;  // a Gateway lives while the phone holds it, not longer
  try {
    std::shared_ptr<kj::TlsContext> tls;
    if (!config_.tlsCert.empty())
      tls = net::makeServerTlsContext(config_.tlsCert.string(), config_.tlsKey.string());
    p.listener =
        std::make_unique<net::RpcListener>(threadPointers, config_.listen, gateway,
                                           net::DisconnectHook(), phoneLimits, std::move(tls));
  } catch (const std::exception& e) {
    throw HostStartError(e.what());
  }
  startWeb(threadPointers, gateway);
  if (!config_.cluster.empty()) startCluster();
  startAdmin();
  // The ready line: logged once every endpoint (phones, web, admin socket, metrics) answers,
  // so whoever waits for it (tests, operators' scripts) may use any of them.
  spdlog::info("switchboard {} serving phones on {}{} with {} network threads, data in {}",
               SWITCHBOARD_VERSION, p.listener->boundEndpoint(),
               config_.tlsCert.empty() ? "" : " (TLS)", p.threads.size(), config_.dataDir.string());
}

void HostProcess::startWeb(const std::vector<net::NetworkThread*>& threads,
                           const net::BootstrapFactory& gateway) {
  if (config_.webListen.empty()) return;
  web::WebServerOptions options;
  options.listen = config_.webListen;
  options.root = config_.webRoot.empty() ? defaultWebRoot() : config_.webRoot;
  options.allowedOrigins = web::splitList(config_.webOrigins);
  options.trustedProxies = web::splitList(config_.webTrustedProxies);
  try {
    parts_->web = std::make_unique<web::WebServer>(threads, options, gateway);
  } catch (const std::exception& e) {
    // The built-in default is a convenience; an address the operator chose must work.
    if (config_.webListen != HostConfig{}.webListen) throw HostStartError(e.what());
    spdlog::warn("no web app: {} (give --web-listen)", e.what());
    return;
  }
  spdlog::info("web app on http://{}/{}", parts_->web->boundEndpoint(),
               options.root.empty() ? " (not built: only /rpc)" : "");
}

void HostProcess::startCluster() {
  Parts& p = *parts_;
  cluster::ClusterNodeOptions options;
  options.url = config_.cluster;
  options.nodeName = config_.nodeName;
  options.address = p.listener->boundEndpoint();
  options.version = SWITCHBOARD_VERSION;
  cluster::NodeFacts facts;
  facts.sessions = [this] {
    return static_cast<std::uint32_t>(parts_->messaging->sessions().size());
  };
  facts.pluginVersions = [this] {
    std::string versions;
    for (const auto& kind : parts_->plugins->status()) {
      if (!versions.empty()) versions += ' ';
      versions += std::string(plugin::kindName(kind.kind)) + "=" + kind.currentVersion.value_or("");
    }
    return versions;
  };
  try {
    p.cluster = std::make_unique<cluster::ClusterNode>(options, facts, *p.threads.front());
  } catch (const std::exception& e) {
    throw HostStartError(e.what());
  }
  p.messaging->attachCluster(*p.cluster);
  spdlog::info("node {} in the cluster at {}", config_.nodeName, config_.cluster);
}

void HostProcess::startAdmin() {
  Parts& p = *parts_;
  admin::HostFacts facts;
  facts.version = SWITCHBOARD_VERSION;
  facts.node = config_.nodeName;
  facts.dataDir = config_.dataDir.string();
  facts.clientEndpoint = p.listener->boundEndpoint();
  facts.threads = static_cast<std::uint32_t>(p.threads.size());
  p.adminView.reset(new admin::HostView{facts, *p.store, *p.plugins, *p.pluginServices,
                                        *p.messaging, *p.sms, *p.push, *p.threads.front(),
                                        [this] {
                                          return parts_->listener->connectionCount() +
                                                 (parts_->web ? parts_->web->connectionCount() : 0);
                                        },
                                        p.cluster.get()});
  p.adminWorker = std::make_unique<admin::OperationWorker>();
  if (p.cluster) {
    // Plugin operations other nodes forward here (sbctl plugin load --node).
    p.threads.front()->runSync([&p] {
      p.relayedPlugins =
          std::make_unique<admin::RelayedPluginOperations>(*p.adminView, *p.adminWorker);
    });
    p.cluster->adminRelay().serve(*p.threads.front(), [this](cluster::PluginRequest request,
                                                             cluster::AdminRelay::Answer answer) {
      parts_->relayedPlugins->run(std::move(request), std::move(answer));
    });
  }
  try {
    if (!config_.adminSocket.empty()) {
      p.adminListener = admin::listenAdminSocket(
          *p.threads.front(), config_.adminSocket, [this](const net::ConnectionInfo&) {
            return capnp::Capability::Client(
                kj::heap<admin::AdminServer>(*parts_->adminView, *parts_->adminWorker));
          });
      spdlog::info("admin socket {}", config_.adminSocket.string());
    }
    if (!config_.metricsListen.empty()) {
      p.metrics = std::make_unique<admin::MetricsServer>(
          config_.metricsListen, [this] { return admin::renderHostMetrics(*parts_->adminView); });
      spdlog::info("metrics on http://{}/metrics", p.metrics->boundEndpoint());
    }
  } catch (const std::exception& e) {
    throw HostStartError(e.what());
  }
}

HostProcess::~HostProcess() {
  shutdown();
}

void HostProcess::loadInitialPlugins() {
  std::filesystem::path dir = config_.pluginDir.empty() ? defaultPluginDir() : config_.pluginDir;
  if (dir.empty()) {
    spdlog::warn("no plugin directory: load plugins with sbctl before phones can register");
    return;
  }
  if (!std::filesystem::is_directory(dir)) {
    throw HostStartError("plugin dir " + dir.string() + " is not a directory");
  }
  for (Kind kind : {Kind::auth, Kind::routing, Kind::presence, Kind::offline}) {
    std::string name(plugin::kindName(kind));
    std::filesystem::path library;
    for (auto candidate : {dir / name / ("lib" + name + ".so"), dir / ("lib" + name + ".so")}) {
      if (std::filesystem::exists(candidate)) {
        library = candidate;
        break;
      }
    }
    if (library.empty()) {
      spdlog::warn("no {} plugin in {}", name, dir.string());
      continue;
    }
    auto result = parts_->plugins->load(kind, library, "startup");
    if (!result.ok) {
      throw HostStartError("cannot load the " + name + " plugin " + library.string() + ": " +
                           result.error);
    }
    spdlog::info("{} plugin {} loaded from {}", name, result.toVersion, library.string());
  }
}

std::string HostProcess::clientEndpoint() const {
  return parts_->listener->boundEndpoint();
}

std::string HostProcess::webEndpoint() const {
  return parts_->web ? parts_->web->boundEndpoint() : std::string();
}

std::string HostProcess::metricsEndpoint() const {
  return parts_->metrics ? parts_->metrics->boundEndpoint() : std::string();
}

plugin::PluginManager& HostProcess::plugins() {
  return *parts_->plugins;
}

int HostProcess::run() {
  parts_->stop->async_wait([this](const std::error_code& error, int signal) {
    if (!error) spdlog::info("signal {}: shutting down", signal);
    parts_->signals.stop();
  });
  // Expired messages are never delivered; the sweep also frees their rows.
  asio::steady_timer sweep(parts_->signals);
  std::function<void()> scheduleSweep = [&]() {
    sweep.expires_after(kExpirySweepInterval);
    sweep.async_wait([&](const std::error_code& error) {
      if (error) return;
      parts_->messaging->sweepExpired();
      scheduleSweep();
    });
  };
  parts_->messaging->sweepExpired();
  scheduleSweep();
  std::function<void()> waitHangup = [&]() {
    parts_->hangup->async_wait([&](const std::error_code& error, int) {
      if (error) return;
      spdlog::info("signal SIGHUP: reloading the configuration");
      reload();
      waitHangup();
    });
  };
  waitHangup();
  auto guard = asio::make_work_guard(parts_->signals);
  parts_->signals.run();
  shutdown();
  return 0;
}

void HostProcess::setConfigSource(std::function<ParsedConfig()> source) {
  configSource_ = std::move(source);
}

// ---------------------------------------------------------------- reload (SIGHUP)

std::vector<std::string> HostProcess::reload() {
  auto report = [](std::vector<std::string>& lines, spdlog::level::level_enum level,
                   std::string line) {
    spdlog::log(level, "{}", line);
    lines.push_back(std::move(line));
  };
  std::vector<std::string> lines;
  if (!configSource_) {
    report(lines, spdlog::level::warn, "reload: no configuration source, nothing re-read");
    return lines;
  }
  spdlog::debug("reload: reading the flags and {}",
                config_.configFile.empty() ? "no config file" : config_.configFile.string());
  ParsedConfig parsed = configSource_();
  if (parsed.outcome != ParsedConfig::Outcome::run) {
    report(lines, spdlog::level::err, "reload: refused, nothing applied: " + parsed.text);
    report(lines, spdlog::level::info, "reload: done: 0 applied, 0 need a restart, 1 refused");
    return lines;
  }
  const HostConfig& next = parsed.config;
  std::vector<std::string> applied, restart, refused;
  bool limitsChanged = false;
  for (const std::string& key : changedSettings(live_, next)) {
    if (key == "log-level") {
      applied.push_back(key + " " + live_.logLevel + " -> " + next.logLevel);
    } else if (key == "probation-seconds" || key == "probation-errors" ||
               key == "canary-timeout-ms") {
      limitsChanged = true;
      applied.push_back(key);
    } else if (key.starts_with("plugin.")) {
      auto kind = plugin::parseKind(key.substr(7));
      std::vector<plugin::Plugin::Setting> settings;
      if (auto found = next.pluginSettings.find(key.substr(7));
          found != next.pluginSettings.end()) {
        for (const auto& [name, value] : found->second) settings.push_back({name, value});
      }
      auto result = parts_->plugins->reconfigure(*kind, std::move(settings));
      if (!result.ok) {
        refused.push_back(key + ": " + result.error);
        continue;
      }
      applied.push_back(key);
    } else {
      restart.push_back(key);
      continue;
    }
    copySetting(key, next, live_);
  }
  if (limitsChanged) {
    parts_->plugins->setLimits({std::chrono::seconds(live_.probationSeconds),
                                live_.probationErrorThreshold,
                                std::chrono::milliseconds(live_.canaryTimeoutMs)});
  }
  auto joined = [](const std::vector<std::string>& items) {
    std::string text;
    for (const auto& item : items) text += (text.empty() ? "" : ", ") + item;
    return text;
  };
  // The report is written at info or above whatever the old and new levels
  // (the operator asked for it); the new level holds from the next line on.
  spdlog::set_level(std::min(spdlog::level::info, spdlog::get_level()));
  if (!applied.empty()) report(lines, spdlog::level::info, "reload: applied: " + joined(applied));
  if (!restart.empty())
    report(lines, spdlog::level::warn, "reload: not applied, needs a restart: " + joined(restart));
  for (const auto& item : refused) report(lines, spdlog::level::err, "reload: refused: " + item);
  if (lines.empty()) report(lines, spdlog::level::info, "reload: nothing changed");
  // The last line of every report, for whoever waits on it.
  report(lines, spdlog::level::info,
         "reload: done: " + std::to_string(applied.size()) + " applied, " +
             std::to_string(restart.size()) + " need a restart, " + std::to_string(refused.size()) +
             " refused");
  spdlog::set_level(spdlog::level::from_str(live_.logLevel));
  return lines;
}

void HostProcess::requestStop() {
  parts_->signals.stop();
}

void HostProcess::shutdown() {
  Parts& p = *parts_;
  // The admin room first: it reads and drives everything below. The worker
  // finishes an operation in progress (bounded by the canary time-out).
  p.metrics.reset();
  if (p.adminListener) {
    p.adminListener->stop();
    p.adminListener.reset();
  }
  if (p.relayedPlugins) {
    p.cluster->adminRelay().stopServing();
    p.threads.front()->runSync([&p] { p.relayedPlugins.reset(); });
  }
  p.adminWorker.reset();
  // Leave the cluster's listing before the phones are told to go elsewhere.
  // The node itself goes once the network threads stop (messaging uses it).
  if (p.cluster) p.cluster->leave();
  if (p.listener) {
    p.listener->stopAccepting();
    if (p.web) p.web->stopAccepting();
    p.messaging->kickAll("server shutting down");
    std::this_thread::sleep_for(kShutdownGrace);
    p.listener->stop();
    p.listener.reset();
    p.web.reset();
  }
  // The sessions' objects live on the network threads; stopping them destroys
  // what is left there before the services those objects point to.
  for (auto& thread : p.threads) thread->stop();
  // What the sessions wrote as they ended commits while the node is still
  // there: messaging copies such rows into the cluster's stream after commit.
  if (p.store) p.store->flush();
  p.cluster.reset();
  p.threads.clear();
  p.messaging.reset();
  p.plugins.reset();
  if (p.store) {
    p.store->flush();
    p.store.reset();
  }
}

}  // namespace switchboard
