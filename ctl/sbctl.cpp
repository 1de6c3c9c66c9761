// sbctl: the operator's command line for a running Switchboard host, over its admin
// socket (proto/admin.capnp). Human tables by default, one JSON document with --json.
// Exit 0 on success; on error one line "sbctl: <reason>" on stderr and exit 1 (2 for
// a command-line mistake).

#include "activity_report.h"
#include "admin_client.h"
#include "admin_json.h"
#include "rolling_upgrade.h"
#include "text_table.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>

#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace switchboard::ctl {
namespace {

// ---------------------------------------------------------------- output

// Where one command's result goes: a JSON document on stdout with --json, otherwise
// the command's own human rendering.
struct Output {
  bool json = false;

  void emit(const nlohmann::json& document, const std::function<void()>& human) const {
    if (json) {
      std::cout << document.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    } else {
      human();
    }
  }
};

std::string orDash(const std::string& text) {
  return text.empty() ? "-" : text;
}

std::string shortSha(const std::string& sha) {
  return sha.size() > 12 ? sha.substr(0, 12) : sha;
}

void printPlugins(const std::vector<PluginStatus>& plugins) {
  TextTable table(
      {"kind", "state", "version", "calls", "errors", "p50", "p99", "swaps", "pause p99", "kept"});
  for (const auto& plugin : plugins) {
    std::uint64_t calls = 0, errors = 0, p50 = 0, p99 = 0;
    std::string kept;
    for (const auto& version : plugin.versions) {
      if (version.current) {
        calls = version.calls;
        errors = version.errors;
        p50 = version.p50Ns;
        p99 = version.p99Ns;
      }
      if (!kept.empty()) kept += ",";
      kept += version.version;
    }
    table.addRow({plugin.kind, plugin.state, orDash(plugin.version), std::to_string(calls),
                  std::to_string(errors), formatNanos(p50), formatNanos(p99),
                  std::to_string(plugin.swaps), formatNanos(plugin.pauseP99Us * 1000),
                  orDash(kept)});
  }
  table.print(std::cout);
}

void printSessions(const std::vector<SessionInfo>& sessions) {
  if (sessions.empty()) {
    std::cout << "no sessions\n";
    return;
  }
  TextTable table(
      {"phone", "session", "peer", "thread", "since", "queue", "max queue", "delivered"});
  for (const auto& s : sessions) {
    table.addRow({s.phone, std::to_string(s.sessionId), s.peer, std::to_string(s.thread),
                  formatTimeMs(s.sinceMs), std::to_string(s.queueLength),
                  std::to_string(s.maxQueueLength), std::to_string(s.delivered)});
  }
  table.print(std::cout);
}

void printUsers(const std::vector<UserInfo>& users) {
  if (users.empty()) {
    std::cout << "no users\n";
    return;
  }
  TextTable table(
      {"phone", "device", "online", "queued", "contacts", "groups", "created", "last seen"});
  for (const auto& u : users) {
    table.addRow({u.phone, u.deviceName.empty() ? "(revoked)" : u.deviceName,
                  u.online ? "yes" : "no", std::to_string(u.queuedMessages),
                  std::to_string(u.contacts), std::to_string(u.groups), formatTimeMs(u.createdMs),
                  formatTimeMs(u.lastSeenMs)});
  }
  table.print(std::cout);
}

void printKeyValues(const std::vector<std::pair<std::string, std::string>>& rows) {
  std::size_t width = 0;
  for (const auto& [key, value] : rows) width = std::max(width, key.size());
  for (const auto& [key, value] : rows) {
    std::cout << key << std::string(width - key.size() + 2, ' ') << value << '\n';
  }
}

void printOperation(const std::string& verb, const std::string& kind, const PluginOperation& op) {
  if (op.ok) {
    std::cout << kind << ": " << verb << " " << orDash(op.fromVersion) << " -> " << op.toVersion
              << " (sha256 " << shortSha(op.sha256) << ", pause " << formatNanos(op.pauseUs * 1000)
              << ")\n";
  }
}

// A refused load or rollback is an outcome the host records, not an RPC error; to the
// shell it is still a failure.
int operationExit(const std::string& verb, const PluginOperation& op) {
  if (op.ok) return 0;
  std::cerr << "sbctl: " << verb << " refused: " << op.error << '\n';
  return 1;
}

// ---------------------------------------------------------------- the command line

struct Arguments {
  std::string socket;  // empty: defaultAdminSocket() (admin_client.h)
  unsigned timeoutSeconds = 15;
  Output output;

  std::string kind, path, version, phone, prefix, reason, text, to;
  std::uint32_t limit = 0;
  std::uint32_t minQueue = 0;
  bool once = false;
  unsigned iterations = 0;
  unsigned intervalMs = 1000;
  std::uint32_t rows = 10;
  std::string node;                   // --node NAME|all: forwarded to other nodes
  bool waitProbation = false;         // --wait-probation
  unsigned nodeTimeoutSeconds = 120;  // --node-timeout
  std::vector<std::string> nodes;     // cluster upgrade --nodes
};

// One row per node of a load or rollback forwarded with --node; exit 1 unless
// every node answered ok.
int printNodeOperations(const Output& out, const std::vector<NodeOperation>& results) {
  out.emit(results, [&]() {
    TextTable table({"node", "result", "from", "to", "pause", "error"});
    for (const auto& r : results) {
      std::string result = !r.answered ? "no answer" : r.result.ok ? "ok" : "refused";
      table.addRow({r.node, result, orDash(r.result.fromVersion), orDash(r.result.toVersion),
                    r.result.ok ? formatNanos(r.result.pauseUs * 1000) : "-", r.result.error});
    }
    table.print(std::cout);
  });
  bool allOk = std::all_of(results.begin(), results.end(),
                           [](const NodeOperation& r) { return r.answered && r.result.ok; });
  if (!allOk) {
    for (const auto& r : results) {
      if (!r.answered || !r.result.ok)
        std::cerr << "sbctl: " << r.node << ": " << r.result.error << '\n';
    }
  }
  return allOk ? 0 : 1;
}

void printUpgradeStep(const RollingUpgradeStep& step) {
  const auto& op = step.load.result;
  if (step.load.answered && op.ok) {
    std::cout << step.node << ": " << orDash(op.fromVersion) << " -> " << op.toVersion
              << ", probation passed\n";
  } else {
    std::cout << step.node << ": failed: " << op.error << '\n';
  }
  if (step.rollback) {
    std::cout << step.node << ": rolled back to " << step.before << ": "
              << (step.rollback->answered && step.rollback->result.ok ? "ok"
                                                                      : step.rollback->result.error)
              << '\n';
  }
  std::cout.flush();
}

void printCluster(const ClusterStatus& c) {
  if (c.state == "single-node") {
    std::cout << "single node: not in a cluster (start the host with --cluster nats://HOST:PORT)\n";
    return;
  }
  printKeyValues({{"node", c.node},
                  {"nats", c.url},
                  {"state", c.state},
                  {"disconnects", std::to_string(c.disconnects)}});
  std::cout << '\n';
  if (!c.error.empty()) {
    std::cout << "nodes unknown: " << c.error << '\n';
    return;
  }
  TextTable table({"node", "address", "sessions", "plugins", "last heard", "version"});
  for (const auto& n : c.nodes) {
    table.addRow({n.name, n.address, std::to_string(n.sessions), orDash(n.pluginVersions),
                  formatDuration(static_cast<unsigned long long>(n.lastHeardMsAgo / 1000)) + " ago",
                  n.version});
  }
  table.print(std::cout);
}

using Command = std::function<int(AdminClient&, Arguments&)>;

int run(int argc, char** argv) {
  CLI::App app{"sbctl: operate a running Switchboard host over its admin socket"};
  app.name("sbctl");
  // Options of the top level are accepted after any subcommand too: `sbctl status --json`.
  app.fallthrough();
  app.require_subcommand(0, 1);

  Arguments args;
  app.add_option("--socket", args.socket,
                 "the host's admin socket or HOST:PORT (default: $SWITCHBOARD_ADMIN_SOCKET, "
                 "else ./var/admin.sock, else /run/switchboard/admin.sock)");
  app.add_option("--timeout", args.timeoutSeconds, "seconds one call may take")
      ->capture_default_str();
  app.add_flag("--json", args.output.json, "print one JSON document instead of tables");

  std::optional<Command> command;
  auto on = [&command](CLI::App* sub, Command action) {
    sub->callback([&command, action]() { command = action; });
  };
  const Output& out = args.output;

  // ---- status
  on(app.add_subcommand("status", "the host at a glance"), [&](AdminClient& admin, Arguments&) {
    Status s = admin.status();
    out.emit(s, [&]() {
      printKeyValues({{"version", s.version},
                      {"node", orDash(s.node)},
                      {"uptime", formatDuration(s.uptimeSeconds)},
                      {"threads", std::to_string(s.threads)},
                      {"sessions", std::to_string(s.sessions)},
                      {"connections", std::to_string(s.connections)},
                      {"data dir", s.dataDir},
                      {"clients on", s.clientEndpoint},
                      {"cluster", s.cluster}});
      std::cout << '\n';
      printPlugins(s.plugins);
    });
    return 0;
  });

  // ---- cluster
  CLI::App* clusterCommand =
      app.add_subcommand("cluster", "the nodes of the cluster this host belongs to");
  clusterCommand->require_subcommand(0, 1);
  CLI::App* upgrade = clusterCommand->add_subcommand(
      "upgrade", "load a plugin version node by node, each after the last one's probation");
  // CLI11 runs this after upgrade's callback: it must not replace that command.
  clusterCommand->callback([&]() {
    if (upgrade->parsed()) return;
    command = [&](AdminClient& admin, Arguments&) {
      ClusterStatus c = admin.cluster();
      out.emit(c, [&]() { printCluster(c); });
      return c.state == "degraded" ? 1 : 0;
    };
  });
  upgrade->add_option("KIND", args.kind, "routing, auth, presence or offline")->required();
  upgrade->add_option("PATH", args.path, "the .so, at this path on every node's machine")
      ->required();
  upgrade->add_option("--nodes", args.nodes, "these nodes in this order (default: all, by name)")
      ->delimiter(',');
  upgrade
      ->add_option("--node-timeout", args.nodeTimeoutSeconds,
                   "seconds each node has for its load and probation")
      ->capture_default_str();
  upgrade->callback([&]() {
    command = [&](AdminClient& admin, Arguments& a) {
      std::string path = a.path;
      if (std::filesystem::exists(path)) path = std::filesystem::absolute(path).string();
      RollingUpgradeOptions options{a.kind, path, a.nodes,
                                    std::chrono::seconds(a.nodeTimeoutSeconds)};
      auto report = rollingUpgrade(admin, options, [&](const RollingUpgradeStep& step) {
        if (!out.json) printUpgradeStep(step);
      });
      if (out.json) {
        nlohmann::json steps = nlohmann::json::array();
        for (const auto& step : report.steps) {
          nlohmann::json row = step.load;
          row["before"] = step.before;
          if (step.rollback) row["rollback"] = *step.rollback;
          steps.push_back(row);
        }
        std::cout << nlohmann::json{{"ok", report.ok},
                                    {"steps", steps},
                                    {"notReached", report.notReached}}
                         .dump(2)
                  << '\n';
      } else if (report.ok) {
        std::cout << a.kind << ": every node upgraded\n";
      } else {
        std::cerr << "sbctl: upgrade stopped at " << report.steps.back().node;
        if (!report.notReached.empty()) {
          std::cerr << "; not upgraded:";
          for (const auto& node : report.notReached) std::cerr << ' ' << node;
        }
        std::cerr << '\n';
      }
      return report.ok ? 0 : 1;
    };
  });

  // ---- plugins
  on(app.add_subcommand("plugins", "every plugin kind, its serving and kept versions"),
     [&](AdminClient& admin, Arguments&) {
       auto plugins = admin.plugins();
       out.emit(plugins, [&]() { printPlugins(plugins); });
       return 0;
     });

  CLI::App* plugin = app.add_subcommand("plugin", "load, roll back and audit plugins");
  plugin->require_subcommand(1);
  CLI::App* load = plugin->add_subcommand("load", "load a shared object as a new version");
  load->add_option("KIND", args.kind, "routing, auth, presence or offline")->required();
  load->add_option("PATH", args.path, "the .so on the host's machine")->required();
  auto addNodeOptions = [&args](CLI::App* sub) {
    sub->add_option("--node", args.node,
                    "another node of the cluster, or all: forwarded by this host over NATS");
    sub->add_option("--node-timeout", args.nodeTimeoutSeconds,
                    "with --node: seconds each node has to answer")
        ->capture_default_str();
  };
  addNodeOptions(load);
  load->add_flag("--wait-probation", args.waitProbation,
                 "answer once the probation window has closed (fails if it rolled back)");
  on(load, [&](AdminClient& admin, Arguments& a) {
    // The host resolves paths in its own working directory: send an absolute one.
    std::string path = a.path;
    if (std::filesystem::exists(path)) path = std::filesystem::absolute(path).string();
    if (!a.node.empty()) {
      return printNodeOperations(
          out, admin.loadPluginOnNodes(a.node, a.kind, path, a.waitProbation,
                                       std::chrono::seconds(a.nodeTimeoutSeconds)));
    }
    std::ostream& steps = out.json ? std::cerr : std::cout;
    nlohmann::json stepLog = nlohmann::json::array();
    auto op = admin.loadPlugin(
        a.kind, path,
        [&](const std::string& step, const std::string& detail) {
          stepLog.push_back({{"step", step}, {"detail", detail}});
          steps << "  " << step << std::string(step.size() < 10 ? 10 - step.size() : 1, ' ')
                << detail << std::endl;
        },
        a.waitProbation);
    nlohmann::json document = op;
    document["steps"] = stepLog;
    out.emit(document, [&]() { printOperation("loaded", a.kind, op); });
    return operationExit("load", op);
  });

  CLI::App* rollback = plugin->add_subcommand("rollback", "back to the previous or a kept version");
  rollback->add_option("KIND", args.kind)->required();
  rollback->add_option("--to", args.version, "a version kept loaded (default: the previous)");
  addNodeOptions(rollback);
  on(rollback, [&](AdminClient& admin, Arguments& a) {
    if (!a.node.empty()) {
      return printNodeOperations(
          out, admin.rollbackPluginOnNodes(a.node, a.kind, a.version,
                                           std::chrono::seconds(a.nodeTimeoutSeconds)));
    }
    auto op = admin.rollbackPlugin(a.kind, a.version);
    out.emit(op, [&]() { printOperation("rolled back", a.kind, op); });
    return operationExit("rollback", op);
  });

  CLI::App* history = plugin->add_subcommand("history", "the plugin ledger, newest first");
  history->add_option("KIND", args.kind, "one kind (default: all)");
  history->add_option("--limit", args.limit, "at most this many entries (default 100)");
  on(history, [&](AdminClient& admin, Arguments& a) {
    auto entries = admin.pluginHistory(a.kind, a.limit);
    out.emit(entries, [&]() {
      if (entries.empty()) {
        std::cout << "the ledger is empty\n";
        return;
      }
      TextTable table(
          {"id", "at", "kind", "from", "to", "result", "pause", "actor", "sha256", "reason"});
      for (const auto& e : entries) {
        table.addRow({std::to_string(e.id), formatTimeMs(e.atMs), e.kind, orDash(e.fromVersion),
                      orDash(e.toVersion), e.result, formatNanos(e.pauseUs * 1000), orDash(e.actor),
                      shortSha(e.sha256), e.reason});
      }
      table.print(std::cout);
    });
    return 0;
  });

  // ---- sessions
  CLI::App* sessions = app.add_subcommand("sessions", "live sessions, ordered by phone");
  sessions->add_option("--prefix", args.prefix, "phones starting with this");
  sessions->add_option("--min-queue", args.minQueue, "outbound queue at least this long");
  sessions->add_option("--limit", args.limit, "at most this many (default 1000)");
  on(sessions, [&](AdminClient& admin, Arguments& a) {
    auto list = admin.sessions(a.prefix, a.minQueue, a.limit);
    out.emit(list, [&]() { printSessions(list); });
    return 0;
  });

  CLI::App* session = app.add_subcommand("session", "one phone's live session");
  session->add_option("PHONE", args.phone)->required();
  on(session, [&](AdminClient& admin, Arguments& a) {
    auto s = admin.session(a.phone);
    out.emit(s, [&]() { printSessions({s}); });
    return 0;
  });

  CLI::App* kick = app.add_subcommand("kick", "tell a phone's session why and close it");
  kick->add_option("PHONE", args.phone)->required();
  kick->add_option("--reason", args.reason, "what the phone is told");
  on(kick, [&](AdminClient& admin, Arguments& a) {
    admin.kick(a.phone, a.reason);
    out.emit({{"ok", true}, {"phone", a.phone}},
             [&]() { std::cout << "kicked " << a.phone << '\n'; });
    return 0;
  });

  CLI::App* queues = app.add_subcommand("queues", "the sessions with the longest queues");
  queues->add_option("--limit", args.limit, "how many (default 10)");
  on(queues, [&](AdminClient& admin, Arguments& a) {
    auto list = admin.queues(a.limit);
    out.emit(list, [&]() { printSessions(list); });
    return 0;
  });

  // ---- users
  CLI::App* users = app.add_subcommand("users", "registered users, ordered by phone");
  users->add_option("--prefix", args.prefix, "phones starting with this");
  users->add_option("--limit", args.limit, "at most this many");
  on(users, [&](AdminClient& admin, Arguments& a) {
    auto list = admin.users(a.prefix, a.limit);
    out.emit(list, [&]() { printUsers(list); });
    return 0;
  });

  CLI::App* user = app.add_subcommand("user", "one user; `user delete PHONE`, `user revoke PHONE`");
  user->add_option("PHONE", args.phone);
  user->require_subcommand(0, 1);
  CLI::App* userDelete = user->add_subcommand("delete", "remove the user and all it owns");
  userDelete->add_option("PHONE", args.phone)->required();
  on(userDelete, [&](AdminClient& admin, Arguments& a) {
    admin.deleteUser(a.phone);
    out.emit({{"ok", true}, {"phone", a.phone}},
             [&]() { std::cout << "deleted " << a.phone << '\n'; });
    return 0;
  });
  CLI::App* userRevoke = user->add_subcommand("revoke", "revoke the device key and kick");
  userRevoke->add_option("PHONE", args.phone)->required();
  on(userRevoke, [&](AdminClient& admin, Arguments& a) {
    admin.revokeKey(a.phone);
    out.emit({{"ok", true}, {"phone", a.phone}},
             [&]() { std::cout << "revoked the key of " << a.phone << '\n'; });
    return 0;
  });
  // The parent's callback runs after a nested one: only show the user when no
  // delete/revoke was given.
  user->callback([&]() {
    if (!user->get_subcommands().empty()) return;
    if (args.phone.empty()) throw CLI::RequiredError("user: PHONE");
    command = [&](AdminClient& admin, Arguments& a) {
      auto u = admin.user(a.phone);
      out.emit(u, [&]() { printUsers({u}); });
      return 0;
    };
  });

  CLI::App* outbox = app.add_subcommand("outbox", "SMS the host sent, newest first");
  outbox->add_option("PHONE", args.phone, "one phone (default: all)");
  outbox->add_option("--limit", args.limit, "at most this many");
  on(outbox, [&](AdminClient& admin, Arguments& a) {
    auto entries = admin.outbox(a.phone, a.limit);
    out.emit(entries, [&]() {
      if (entries.empty()) {
        std::cout << "the outbox is empty\n";
        return;
      }
      TextTable table({"at", "phone", "code", "outcome", "text"});
      for (const auto& e : entries) {
        table.addRow({formatTimeMs(e.atMs), e.phone, orDash(e.code), e.outcome, e.text});
      }
      table.print(std::cout);
    });
    return 0;
  });

  // ---- traffic
  on(app.add_subcommand("stats", "counters since start"), [&](AdminClient& admin, Arguments&) {
    Stats s = admin.stats();
    nlohmann::json document = s;
    out.emit(document, [&]() {
      std::vector<std::pair<std::string, std::string>> rows;
      for (const auto& [key, value] : document.items()) rows.emplace_back(key, value.dump());
      printKeyValues(rows);
    });
    return 0;
  });

  CLI::App* broadcast = app.add_subcommand("broadcast", "a system message to one or every user");
  broadcast->add_option("--to", args.to, "one phone (default: every registered user)");
  broadcast->add_option("TEXT", args.text)->required();
  on(broadcast, [&](AdminClient& admin, Arguments& a) {
    auto recipients = admin.broadcast(a.to, a.text);
    out.emit({{"recipients", recipients}},
             [&]() { std::cout << "sent to " << recipients << " user(s)\n"; });
    return 0;
  });

  CLI::App* top = app.add_subcommand("top", "live activity report (q quits)");
  top->add_flag("--once", args.once, "print one frame and exit");
  top->add_option("--iterations", args.iterations, "print this many frames and exit");
  top->add_option("--interval", args.intervalMs, "milliseconds between frames")
      ->capture_default_str();
  top->add_option("--rows", args.rows, "queue rows shown")->capture_default_str();
  on(top, [&](AdminClient& admin, Arguments& a) {
    TopOptions options;
    options.iterations = a.once ? 1 : a.iterations;
    options.interval = std::chrono::milliseconds(a.intervalMs);
    options.queueRows = a.rows;
    options.json = out.json;
    if (options.json && options.iterations == 0) options.iterations = 1;
    return runTop(admin, options);
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "sbctl: " << e.what() << " (see sbctl --help)\n";
    return 2;
  }
  if (!command) {
    std::cerr << "sbctl: no command given (see sbctl --help)\n";
    return 2;
  }

  try {
    AdminClientOptions options;
    options.socketPath = args.socket.empty() ? defaultAdminSocket() : args.socket;
    options.callTimeout = std::chrono::seconds(args.timeoutSeconds);
    AdminClient admin(options);
    return (*command)(admin, args);
  } catch (const std::exception& error) {
    std::string message = error.what();
    if (auto newline = message.find('\n'); newline != std::string::npos) {
      message.resize(newline);
    }
    std::cerr << "sbctl: " << message << '\n';
    return 1;
  }
}

}  // namespace
}  // namespace switchboard::ctl

int main(int argc, char** argv) {
  return switchboard::ctl::run(argc, argv);
}
