// The `switchboard` Python module: operator scripting (Admin) and phones (Client).

#include "python_bindings.h"

#include "admin_client.h"
#include "client/client.h"

#include <cctype>

namespace py = pybind11;

namespace switchboard::python {

py::handle errorType;

namespace {

std::string snakeCase(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (std::isupper(static_cast<unsigned char>(c))) {
      out += '_';
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

py::object toPython(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::object: {
      py::dict out;
      for (const auto& [key, item] : value.items()) out[py::str(snakeCase(key))] = toPython(item);
      return out;
    }
    case nlohmann::json::value_t::array: {
      py::list out;
      for (const auto& item : value) out.append(toPython(item));
      return out;
    }
    case nlohmann::json::value_t::string:
      return py::str(value.get_ref<const std::string&>());
    case nlohmann::json::value_t::boolean:
      return py::bool_(value.get<bool>());
    case nlohmann::json::value_t::number_integer:
      return py::int_(value.get<std::int64_t>());
    case nlohmann::json::value_t::number_unsigned:
      return py::int_(value.get<std::uint64_t>());
    case nlohmann::json::value_t::number_float:
      return py::float_(value.get<double>());
    default:
      return py::none();
  }
}

}  // namespace switchboard::python

PYBIND11_MODULE(switchboard, module) {
  using namespace switchboard;
  module.doc() =
      "Switchboard scripting: Admin(socket_path) to operate a host, Client(host, port) to be "
      "a phone. Failures raise switchboard.Error (a RuntimeError) with the server's reason.";
  python::errorType = PyErr_NewException("switchboard.Error", PyExc_RuntimeError, nullptr);
  module.attr("Error") = python::errorType.inc_ref();
  python::errorType.inc_ref();
  py::register_exception_translator([](std::exception_ptr pending) {
    try {
      if (pending) std::rethrow_exception(pending);
    } catch (const ctl::AdminError& error) {
      PyErr_SetString(python::errorType.ptr(), error.what());
    } catch (const client::ClientError& error) {
      PyErr_SetString(python::errorType.ptr(), error.what());
    }
  });
  python::bindAdmin(module);
  python::bindClient(module);
}
