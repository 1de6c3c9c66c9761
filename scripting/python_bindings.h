// What the pieces of the `switchboard` Python module share.
#pragma once

#include <pybind11/pybind11.h>
#include <nlohmann/json.hpp>

namespace switchboard::python {

// switchboard.Error (a RuntimeError): every refusal or failure of the server, the
// connection or a time-out. Set by the module init; a handle that is never released
// (a static py::object would be destroyed after the interpreter is gone).
extern pybind11::handle errorType;

// A JSON value as plain Python objects (dict, list, str, int, float, bool, None), with
// the schema's camelCase keys turned into snake_case ("queueLength" -> "queue_length").
pybind11::object toPython(const nlohmann::json& value);

void bindAdmin(pybind11::module_& module);
void bindClient(pybind11::module_& module);

}  // namespace switchboard::python
