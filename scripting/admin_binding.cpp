// switchboard.Admin: ctl::AdminClient for Python, results as dicts and lists.

#include "admin_client.h"
#include "admin_json.h"
#include "python_bindings.h"

#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>

namespace py = pybind11;

namespace switchboard::python {
namespace {

// Owns the AdminClient. Every call releases the GIL while it waits on the network and
// converts the answer to Python objects with the GIL held again. The client is
// destroyed with the GIL released (its destructor joins the network thread).
class AdminHandle {
 public:
  AdminHandle(const std::string& socketPath, double timeoutSeconds) {
    ctl::AdminClientOptions options;
    options.socketPath = socketPath;
    options.callTimeout = std::chrono::milliseconds(static_cast<long long>(timeoutSeconds * 1000));
    py::gil_scoped_release release;
    client_ = std::make_unique<ctl::AdminClient>(options);
  }
  ~AdminHandle() { close(); }

  void close() { destroyWithoutGil(client_); }

  // Runs `call` on the client without the GIL and returns its JSON form as Python.
  template <class F>
  py::object call(F&& call) {
    if (!client_) throw ctl::AdminError("this Admin is closed");
    nlohmann::json result;
    {
      py::gil_scoped_release release;
      result = call(*client_);
    }
    return toPython(result);
  }

  py::object loadPlugin(const std::string& kind, const std::string& path,
                        std::optional<py::function> progress, std::optional<std::string> node,
                        bool waitProbation, double nodeTimeout) {
    if (node) {
      return call([&](ctl::AdminClient& admin) -> nlohmann::json {
        return admin.loadPluginOnNodes(*node, kind, path, waitProbation, milliseconds(nodeTimeout));
      });
    }
    ctl::AdminClient::ProgressCallback forward;
    if (progress) {
      // Runs on the network thread while this thread waits without the GIL; the
      // AdminClient never calls it after loadPlugin returned.
      forward = [&progress](const std::string& step, const std::string& detail) {
        py::gil_scoped_acquire acquire;
        try {
          (*progress)(step, detail);
        } catch (py::error_already_set& error) {
          error.discard_as_unraisable("switchboard.Admin.load_plugin progress callback");
        }
      };
    }
    return call([&](ctl::AdminClient& admin) -> nlohmann::json {
      return admin.loadPlugin(kind, path, forward, waitProbation);
    });
  }

  py::object rollbackPlugin(const std::string& kind, const std::string& version,
                            std::optional<std::string> node, double nodeTimeout) {
    return call([&](ctl::AdminClient& admin) -> nlohmann::json {
      if (node) return admin.rollbackPluginOnNodes(*node, kind, version, milliseconds(nodeTimeout));
      return admin.rollbackPlugin(kind, version);
    });
  }

  static std::chrono::milliseconds milliseconds(double seconds) {
    return std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
  }

 private:
  std::unique_ptr<ctl::AdminClient> client_;
};

}  // namespace

void bindAdmin(py::module_& module) {
  using A = ctl::AdminClient;
  py::class_<AdminHandle>(module, "Admin", R"doc(A connection to a Switchboard host's admin socket.

Admin(socket_path=None, timeout=15.0)

socket_path is the host's admin Unix socket (or "HOST:PORT"). When None:
$SWITCHBOARD_ADMIN_SOCKET, else ./var/admin.sock if it exists (a host
started in this directory with its defaults), else the packaged service's
/run/switchboard/admin.sock if it exists. timeout bounds one call, in seconds.

Every method blocks until the host answers (with the GIL released) and
returns plain dicts and lists with snake_case keys. A refusal or a failure
raises switchboard.Error with the host's reason. Use it as a context manager
(`with switchboard.Admin() as admin:`) or call close().)doc")
      .def(py::init([](std::optional<std::string> socketPath, double timeout) {
             return std::make_unique<AdminHandle>(
                 socketPath ? *socketPath : ctl::defaultAdminSocket(), timeout);
           }),
           py::arg("socket_path") = py::none(), py::arg("timeout") = 15.0)
      .def("close", &AdminHandle::close, "Closes the connection; later calls raise Error.")
      .def(
          "__enter__", [](AdminHandle& self) -> AdminHandle& { return self; },
          py::return_value_policy::reference)
      .def("__exit__", [](AdminHandle& self, py::args) { self.close(); })
      .def(
          "status",
          [](AdminHandle& h) { return h.call([](A& a) -> nlohmann::json { return a.status(); }); },
          "The host at a glance: version, node, uptime_seconds, threads, sessions, "
          "connections, data_dir, client_endpoint and plugins (as plugins() returns).")
      .def(
          "cluster",
          [](AdminHandle& h) { return h.call([](A& a) -> nlohmann::json { return a.cluster(); }); },
          "The cluster as this node sees it: state, url, node, disconnects, nodes (name, "
          "address, sessions, plugin_versions, last_heard_ms_ago, ...), error.")
      .def(
          "plugins",
          [](AdminHandle& h) { return h.call([](A& a) -> nlohmann::json { return a.plugins(); }); },
          "Per plugin kind: state, serving version, versions kept (calls, errors, p50/p99 "
          "latency each) and swap pauses.")
      .def("load_plugin", &AdminHandle::loadPlugin, py::arg("kind"), py::arg("path"),
           py::arg("progress") = py::none(), py::arg("node") = py::none(),
           py::arg("wait_probation") = false, py::arg("node_timeout") = 120.0,
           "Load a .so as a new version of `kind`; progress(step, detail) hears each step. "
           "Returns the operation dict (ok, error, from_version, to_version, sha256, pause_us). "
           "wait_probation=True answers once the probation window has closed (ok False with "
           "'probation failed: ...' if the host rolled the version back). node='NAME' or "
           "node='all' forwards the load to other nodes of the cluster and returns a list, one "
           "dict per node (node, answered, ok, error, ...); each node has node_timeout seconds "
           "to answer; no progress steps come back from other nodes.")
      .def("rollback_plugin", &AdminHandle::rollbackPlugin, py::arg("kind"),
           py::arg("version") = "", py::arg("node") = py::none(), py::arg("node_timeout") = 120.0,
           "Back to the previous version of `kind`, or to `version` if it is still kept. "
           "Returns the operation dict, as load_plugin does; with node='NAME' or 'all', a list "
           "with one dict per node.")
      .def(
          "plugin_history",
          [](AdminHandle& h, const std::string& kind, std::uint32_t limit) {
            return h.call([&](A& a) -> nlohmann::json { return a.pluginHistory(kind, limit); });
          },
          py::arg("kind") = "", py::arg("limit") = 0,
          "The plugin ledger, newest first: one dict per load, swap, rollback, reconfigure "
          "or refusal (at_ms, actor, kind, from_version, to_version, sha256, pause_us, "
          "result, reason). kind='' means every kind; limit=0 the host's default.")
      .def(
          "sessions",
          [](AdminHandle& h, const std::string& prefix, std::uint32_t minQueue,
             std::uint32_t limit) {
            return h.call(
                [&](A& a) -> nlohmann::json { return a.sessions(prefix, minQueue, limit); });
          },
          py::arg("prefix") = "", py::arg("min_queue") = 0, py::arg("limit") = 0,
          "Live sessions whose phone starts with `prefix` and whose outbound queue holds at "
          "least `min_queue` items.")
      .def(
          "session",
          [](AdminHandle& h, const std::string& phone) {
            return h.call([&](A& a) -> nlohmann::json { return a.session(phone); });
          },
          py::arg("phone"), "One phone's session with its queue length; Error if offline.")
      .def(
          "kick",
          [](AdminHandle& h, const std::string& phone, const std::string& reason) {
            h.call([&](A& a) -> nlohmann::json {
              a.kick(phone, reason);
              return nullptr;
            });
          },
          py::arg("phone"), py::arg("reason") = "",
          "Tells the phone `reason` and closes its session.")
      .def(
          "queues",
          [](AdminHandle& h, std::uint32_t limit) {
            return h.call([&](A& a) -> nlohmann::json { return a.queues(limit); });
          },
          py::arg("limit") = 0, "The longest outbound queues, longest first.")
      .def(
          "users",
          [](AdminHandle& h, const std::string& prefix, std::uint32_t limit) {
            return h.call([&](A& a) -> nlohmann::json { return a.users(prefix, limit); });
          },
          py::arg("prefix") = "", py::arg("limit") = 0,
          "Registered users whose phone starts with `prefix`.")
      .def(
          "user",
          [](AdminHandle& h, const std::string& phone) {
            return h.call([&](A& a) -> nlohmann::json { return a.user(phone); });
          },
          py::arg("phone"), "One registered user; Error if unknown.")
      .def(
          "delete_user",
          [](AdminHandle& h, const std::string& phone) {
            h.call([&](A& a) -> nlohmann::json {
              a.deleteUser(phone);
              return nullptr;
            });
          },
          py::arg("phone"), "Removes the user, its device key and what waits for it.")
      .def(
          "revoke_key",
          [](AdminHandle& h, const std::string& phone) {
            h.call([&](A& a) -> nlohmann::json {
              a.revokeKey(phone);
              return nullptr;
            });
          },
          py::arg("phone"), "Invalidates the user's device key; its session is closed.")
      .def(
          "outbox",
          [](AdminHandle& h, const std::string& phone, std::uint32_t limit) {
            return h.call([&](A& a) -> nlohmann::json { return a.outbox(phone, limit); });
          },
          py::arg("phone") = "", py::arg("limit") = 0,
          "SMS sent, newest first (the code in clear only with the development sink).")
      .def(
          "stats",
          [](AdminHandle& h) { return h.call([](A& a) -> nlohmann::json { return a.stats(); }); },
          "Counters since start: messages, logins, registrations, store commits, sinks.")
      .def(
          "broadcast",
          [](AdminHandle& h, const std::string& text, const std::string& to) {
            return h.call([&](A& a) -> nlohmann::json { return a.broadcast(to, text); });
          },
          py::arg("text"), py::arg("to") = "",
          "A system message to `to`, or to every registered user; returns how many got it.");
}

}  // namespace switchboard::python
