// What the pieces of the `switchboard` Python module share.
#pragma once

#include <pybind11/pybind11.h>
#include <nlohmann/json.hpp>

#include <memory>

namespace switchboard::python {

// switchboard.Error (a RuntimeError): every refusal or failure of the server, the
// connection or a time-out. Set by the module init; a handle that is never released
// (a static py::object would be destroyed after the interpreter is gone).
extern pybind11::handle errorType;

// A JSON value as plain Python objects (dict, list, str, int, float, bool, None), with
// the schema's camelCase keys turned into snake_case ("queueLength" -> "queue_length").
pybind11::object toPython(const nlohmann::json& value);

// Destroys `owned` (a client owning a network thread) with the GIL released if
// this thread holds it: the destructor joins a thread that may be waiting to call
// back into Python.
template <class T>
void destroyWithoutGil(std::unique_ptr<T>& owned) {
  if (!owned) return;
  if (PyGILState_Check()) {
    pybind11::gil_scoped_release release;
    owned.reset();
  } else {
    owned.reset();
  }
}

void bindAdmin(pybind11::module_& module);
void bindClient(pybind11::module_& module);

}  // namespace switchboard::python
