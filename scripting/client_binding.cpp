// switchboard.Client: one phone (client/client.h) for Python scripts and tests.

#include "client/client.h"
#include "python_bindings.h"

#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>

namespace py = pybind11;

namespace switchboard::python {
namespace {

// A queue filled on the client's network thread and drained by Python, which waits
// on it without the GIL.
template <class T>
class EventQueue {
 public:
  void push(T item) {
    {
      std::lock_guard lock(mutex_);
      items_.push_back(std::move(item));
    }
    ready_.notify_all();
  }
  // Waits up to `timeoutSeconds` (negative: forever). Empty when nothing came.
  std::optional<T> pop(double timeoutSeconds) {
    std::unique_lock lock(mutex_);
    auto ready = [this]() { return !items_.empty(); };
    if (timeoutSeconds < 0) {
      ready_.wait(lock, ready);
    } else if (!ready_.wait_for(lock, std::chrono::duration<double>(timeoutSeconds), ready)) {
      return std::nullopt;
    }
    T item = std::move(items_.front());
    items_.pop_front();
    return item;
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<T> items_;
};

const char* presenceName(client::PresenceState state) {
  switch (state) {
    case client::PresenceState::online:
      return "online";
    case client::PresenceState::away:
      return "away";
    case client::PresenceState::offline:
      return "offline";
  }
  return "offline";
}

client::PresenceState presenceFromName(const std::string& name) {
  if (name == "online") return client::PresenceState::online;
  if (name == "away") return client::PresenceState::away;
  if (name == "offline") return client::PresenceState::offline;
  throw py::value_error("presence must be 'online', 'away' or 'offline'");
}

client::ReceiptKind receiptFromName(const std::string& name) {
  if (name == "delivered") return client::ReceiptKind::delivered;
  if (name == "read") return client::ReceiptKind::read;
  throw py::value_error("receipt kind must be 'delivered' or 'read'");
}

py::dict toPython(const client::Message& m) {
  py::dict out;
  out["id"] = m.id;
  out["from"] = m.from;
  out["group"] = m.group;
  out["client_msg_id"] = m.clientMsgId;
  out["body"] = py::bytes(m.body);
  out["text"] = py::reinterpret_steal<py::object>(
      PyUnicode_DecodeUTF8(m.body.data(), static_cast<Py_ssize_t>(m.body.size()), "replace"));
  out["timestamp"] = m.timestamp;
  return out;
}

py::dict toPython(const client::Receipt& r) {
  py::dict out;
  out["id"] = r.id;
  out["by"] = r.by;
  out["kind"] = r.kind == client::ReceiptKind::read ? "read" : "delivered";
  out["timestamp"] = r.timestamp;
  return out;
}

py::dict toPython(const client::PresenceUpdate& p) {
  py::dict out;
  out["phone"] = p.phone;
  out["state"] = presenceName(p.state);
  out["last_seen"] = p.lastSeen;
  out["typing"] = p.typing;
  return out;
}

py::dict toPython(const client::SendResult& s) {
  py::dict out;
  out["id"] = s.id;
  out["timestamp"] = s.timestamp;
  out["client_msg_id"] = s.clientMsgId;
  out["delivered_at"] = s.deliveredAt;
  return out;
}

std::string bodyBytes(const py::object& body) {
  if (py::isinstance<py::bytes>(body)) return body.cast<std::string>();
  if (py::isinstance<py::str>(body)) return body.cast<std::string>();
  throw py::type_error("body must be str or bytes");
}

// Owns one client::Client and the queues its callbacks fill. Events are always queued
// (next_message() and friends drain them); Python callbacks set with on_message() etc.
// are called too, on the network thread with the GIL taken. The client is destroyed
// with the GIL released, because its network thread may be waiting for the GIL in a
// callback at that moment.
class ClientHandle;

// Every open Client, so the interpreter's exit can close them while Python is
// still whole (an atexit hook): a Client's thread that asks for the GIL after
// finalization began would be ended by Python mid-callback (abort). A handle
// being closed by closeAll() is `closing`; its destructor waits for that.
class OpenClients {
 public:
  void add(ClientHandle* handle) {
    std::lock_guard lock(mutex_);
    open_.insert(handle);
  }
  // Called by the handle's destructor, with the GIL held.
  void remove(ClientHandle* handle) {
    std::unique_lock lock(mutex_);
    open_.erase(handle);
    if (closing_ != handle) return;
    py::gil_scoped_release release;  // closeAll() needs the GIL back to finish
    closed_.wait(lock, [&] { return closing_ != handle; });
  }
  void closeAll();

 private:
  std::mutex mutex_;
  std::condition_variable closed_;
  std::set<ClientHandle*> open_;
  ClientHandle* closing_ = nullptr;
};

OpenClients& openClients() {
  static OpenClients* clients = new OpenClients();  // never destroyed: used at exit
  return *clients;
}

class ClientHandle {
 public:
  ClientHandle(const std::string& host, int port, double timeoutSeconds, bool autoReconnect,
               std::vector<std::string> endpoints, std::string tlsCa, std::string tlsServerName) {
    openClients().add(this);
    client::ClientOptions options;
    options.endpoint = host + ":" + std::to_string(port);
    options.endpoints = std::move(endpoints);  // a cluster's nodes; when given, host/port unused
    options.callTimeout = std::chrono::milliseconds(static_cast<long long>(timeoutSeconds * 1000));
    options.autoReconnect = autoReconnect;
    options.tlsCaFile = std::move(tlsCa);
    options.tlsServerName = std::move(tlsServerName);
    client_ = std::make_unique<client::Client>(options);
    client_->onMessage([this](const client::Message& m) {
      messages_.push(m);
      callPython(onMessage_, [&]() { return toPython(m); });
    });
    client_->onReceipt([this](const client::Receipt& r) {
      receipts_.push(r);
      callPython(onReceipt_, [&]() { return toPython(r); });
    });
    client_->onPresence([this](const client::PresenceUpdate& p) {
      presence_.push(p);
      callPython(onPresence_, [&]() { return toPython(p); });
    });
    client_->onKicked([this](const std::string& reason) {
      {
        std::lock_guard lock(kickedMutex_);
        kickedReason_ = reason;
      }
      kicks_.push(reason);
      callPython(onKicked_, [&]() { return py::str(reason); });
    });
  }
  ~ClientHandle() {
    openClients().remove(this);
    close();
  }

  // Safe from two threads at once (a `with` block ending while the exit hook
  // closes every Client): one of them takes the client and destroys it.
  void close() {
    std::unique_ptr<client::Client> taken;
    {
      std::lock_guard lock(closeMutex_);
      taken = std::move(client_);
    }
    destroyWithoutGil(taken);
  }

  client::Client& get() {
    if (!client_)
      throw client::ClientError(client::ClientError::Kind::disconnected, "this Client is closed");
    return *client_;
  }

  // A Python callback, and whether one is set: the network thread reads the
  // flag without the GIL, so an event nobody listens for never asks for it.
  struct Slot {
    py::object callback;
    std::atomic<bool> set{false};
  };
  void setCallback(Slot& slot, py::object callback) {
    std::lock_guard lock(callbackMutex_);
    slot.set = !callback.is_none();
    slot.callback = std::move(callback);
  }
  Slot onMessage_, onReceipt_, onPresence_, onKicked_;

  EventQueue<client::Message> messages_;
  EventQueue<client::Receipt> receipts_;
  EventQueue<client::PresenceUpdate> presence_;
  EventQueue<std::string> kicks_;

  std::optional<std::string> kickedReason() {
    std::lock_guard lock(kickedMutex_);
    return kickedReason_;
  }

 private:
  template <class MakeArgument>
  void callPython(const Slot& slot, MakeArgument&& makeArgument) {
    // While the interpreter exits, Python ends a thread that asks for the GIL
    // (pthread_exit): the callback is skipped then, and whenever none is set.
    if (!slot.set || _Py_IsFinalizing()) return;
    py::gil_scoped_acquire acquire;
    py::object callback;
    {
      std::lock_guard lock(callbackMutex_);
      callback = slot.callback;
    }
    if (!callback || callback.is_none()) return;
    try {
      callback(makeArgument());
    } catch (py::error_already_set& error) {
      error.discard_as_unraisable("switchboard.Client callback");
    }
  }

  std::mutex callbackMutex_;
  std::mutex kickedMutex_;
  std::mutex closeMutex_;
  std::optional<std::string> kickedReason_;
  std::unique_ptr<client::Client> client_;  // last: destroyed first, before the queues
};

template <class T>
py::object popAsPython(EventQueue<T>& queue, std::optional<double> timeout) {
  std::optional<T> item;
  {
    py::gil_scoped_release release;
    item = queue.pop(timeout ? *timeout : -1.0);
  }
  if (!item) return py::none();
  if constexpr (std::is_same_v<T, std::string>) {
    return py::str(*item);
  } else {
    return toPython(*item);
  }
}

}  // namespace

void OpenClients::closeAll() {
  for (;;) {
    ClientHandle* handle = nullptr;
    {
      std::lock_guard lock(mutex_);
      if (open_.empty()) return;
      handle = *open_.begin();
      open_.erase(open_.begin());
      closing_ = handle;
    }
    handle->close();
    {
      std::lock_guard lock(mutex_);
      closing_ = nullptr;
    }
    closed_.notify_all();
  }
}

void bindClient(py::module_& module) {
  // atexit hooks run before finalization, with every Python object usable.
  py::module_::import("atexit").attr("register")(
      py::cpp_function([]() { openClients().closeAll(); }));
  using G = py::call_guard<py::gil_scoped_release>;
  py::class_<ClientHandle>(
      module, "Client",
      "One phone's connection to a Switchboard server (HOST, PORT). Blocking calls release "
      "the GIL. Incoming messages, receipts, presence and kicks are queued: read them with "
      "next_message(timeout) etc., or set callbacks (on_message...) that run on the client's "
      "thread. Failures raise switchboard.Error.")
      .def(py::init<const std::string&, int, double, bool, std::vector<std::string>, std::string,
                    std::string>(),
           py::arg("host") = "127.0.0.1", py::arg("port") = 5222, py::arg("timeout") = 20.0,
           py::arg("auto_reconnect") = true, py::arg("endpoints") = std::vector<std::string>{},
           py::arg("tls_ca") = "", py::arg("tls_server_name") = "",
           "endpoints: a cluster's nodes as [\"HOST:PORT\", ...], tried in turn; a failed "
           "connect moves to the next (host and port are then not used). tls_ca: a PEM file of "
           "the CAs to trust; when given the connection is TLS and the server's certificate must "
           "name tls_server_name (default: the host connected to). A TLS failure raises "
           "switchboard.Error \"TLS handshake with HOST:PORT failed: ...\"; an unreadable "
           "tls_ca raises RuntimeError naming the file.")
      .def("close", &ClientHandle::close)
      .def(
          "__enter__", [](ClientHandle& self) -> ClientHandle& { return self; },
          py::return_value_policy::reference)
      .def("__exit__", [](ClientHandle& self, py::args) { self.close(); })
      .def("server_info",
           [](ClientHandle& h) {
             client::ServerInfo info;
             {
               py::gil_scoped_release release;
               info = h.get().serverInfo();
             }
             py::dict out;
             out["version"] = info.version;
             out["node"] = info.node;
             return out;
           })
      .def(
          "request_code",
          [](ClientHandle& h, const std::string& phone) { return h.get().requestCode(phone); },
          py::arg("phone"), G(),
          "Ask for a registration code by SMS; returns its lifetime in seconds.")
      .def(
          "verify",
          [](ClientHandle& h, const std::string& phone, const std::string& code,
             const std::string& device) {
            std::string key;
            {
              py::gil_scoped_release release;
              key = h.get().verify(phone, code, device);
            }
            return py::bytes(key);
          },
          py::arg("phone"), py::arg("code"), py::arg("device_name") = "python",
          "Verify the code; returns the device key (bytes) to log in with.")
      .def(
          "login",
          [](ClientHandle& h, const std::string& phone, const py::bytes& key) {
            std::string keyBytes = key;
            py::gil_scoped_release release;
            h.get().login(phone, keyBytes);
          },
          py::arg("phone"), py::arg("key"))
      .def(
          "logout", [](ClientHandle& h) { h.get().logout(); }, G())
      .def_property_readonly("logged_in", [](ClientHandle& h) { return h.get().isLoggedIn(); })
      .def_property_readonly("phone", [](ClientHandle& h) { return h.get().phone(); })
      .def(
          "send",
          [](ClientHandle& h, const std::string& to, const py::object& body,
             std::optional<std::string> clientMsgId) {
            std::string bytes = bodyBytes(body);
            client::SendResult result;
            {
              py::gil_scoped_release release;
              result = h.get().send(to, bytes, clientMsgId);
            }
            return toPython(result);
          },
          py::arg("to"), py::arg("body"), py::arg("client_msg_id") = py::none(),
          "Send to a phone; returns {id, timestamp, client_msg_id} once the server has it.")
      .def(
          "send_group",
          [](ClientHandle& h, std::uint64_t group, const py::object& body,
             std::optional<std::string> clientMsgId) {
            std::string bytes = bodyBytes(body);
            client::SendResult result;
            {
              py::gil_scoped_release release;
              result = h.get().sendGroup(group, bytes, clientMsgId);
            }
            return toPython(result);
          },
          py::arg("group"), py::arg("body"), py::arg("client_msg_id") = py::none())
      .def(
          "receipt",
          [](ClientHandle& h, const std::vector<std::uint64_t>& ids, const std::string& kind) {
            auto k = receiptFromName(kind);
            py::gil_scoped_release release;
            h.get().receipt(ids, k);
          },
          py::arg("ids"), py::arg("kind") = "read")
      .def(
          "set_presence",
          [](ClientHandle& h, const std::string& state) {
            auto s = presenceFromName(state);
            py::gil_scoped_release release;
            h.get().setPresence(s);
          },
          py::arg("state"))
      .def(
          "typing",
          [](ClientHandle& h, const std::string& to, bool active) { h.get().typing(to, active); },
          py::arg("to"), py::arg("active") = true, G())
      .def(
          "add_contacts",
          [](ClientHandle& h, const std::vector<std::string>& phones) {
            h.get().addContacts(phones);
          },
          py::arg("phones"), G())
      .def(
          "remove_contacts",
          [](ClientHandle& h, const std::vector<std::string>& phones) {
            h.get().removeContacts(phones);
          },
          py::arg("phones"), G())
      .def("contacts",
           [](ClientHandle& h) {
             std::vector<client::Contact> contacts;
             {
               py::gil_scoped_release release;
               contacts = h.get().contacts();
             }
             py::list out;
             for (const auto& c : contacts) {
               py::dict d;
               d["phone"] = c.phone;
               d["registered"] = c.registered;
               d["state"] = presenceName(c.state);
               d["last_seen"] = c.lastSeen;
               out.append(d);
             }
             return out;
           })
      .def(
          "create_group",
          [](ClientHandle& h, const std::string& name, const std::vector<std::string>& members) {
            return h.get().createGroup(name, members);
          },
          py::arg("name"), py::arg("members"), G())
      .def(
          "add_members",
          [](ClientHandle& h, std::uint64_t group, const std::vector<std::string>& members) {
            h.get().addMembers(group, members);
          },
          py::arg("group"), py::arg("members"), G())
      .def(
          "remove_members",
          [](ClientHandle& h, std::uint64_t group, const std::vector<std::string>& members) {
            h.get().removeMembers(group, members);
          },
          py::arg("group"), py::arg("members"), G())
      .def(
          "leave_group", [](ClientHandle& h, std::uint64_t group) { h.get().leaveGroup(group); },
          py::arg("group"), G())
      .def("groups",
           [](ClientHandle& h) {
             std::vector<client::GroupInfo> groups;
             {
               py::gil_scoped_release release;
               groups = h.get().groups();
             }
             py::list out;
             for (const auto& g : groups) {
               py::dict d;
               d["id"] = g.id;
               d["name"] = g.name;
               d["owner"] = g.owner;
               d["members"] = g.members;
               out.append(d);
             }
             return out;
           })
      .def(
          "next_message",
          [](ClientHandle& h, std::optional<double> timeout) {
            return popAsPython(h.messages_, timeout);
          },
          py::arg("timeout") = py::none(),
          "The next delivered message as a dict (id, from, group, client_msg_id, body, text, "
          "timestamp), or None after `timeout` seconds (None: wait forever).")
      .def(
          "next_receipt",
          [](ClientHandle& h, std::optional<double> timeout) {
            return popAsPython(h.receipts_, timeout);
          },
          py::arg("timeout") = py::none())
      .def(
          "next_presence",
          [](ClientHandle& h, std::optional<double> timeout) {
            return popAsPython(h.presence_, timeout);
          },
          py::arg("timeout") = py::none())
      .def(
          "wait_kicked",
          [](ClientHandle& h, std::optional<double> timeout) {
            return popAsPython(h.kicks_, timeout);
          },
          py::arg("timeout") = py::none(),
          "The reason of the next kick, or None after `timeout` seconds.")
      .def_property_readonly("kicked", &ClientHandle::kickedReason,
                             "The last kick's reason, or None if never kicked.")
      .def("on_message",
           [](ClientHandle& h, py::object f) { h.setCallback(h.onMessage_, std::move(f)); })
      .def("on_receipt",
           [](ClientHandle& h, py::object f) { h.setCallback(h.onReceipt_, std::move(f)); })
      .def("on_presence",
           [](ClientHandle& h, py::object f) { h.setCallback(h.onPresence_, std::move(f)); })
      .def("on_kicked",
           [](ClientHandle& h, py::object f) { h.setCallback(h.onKicked_, std::move(f)); })
      .def_static("new_client_msg_id", &client::Client::newClientMsgId);
}

}  // namespace switchboard::python
