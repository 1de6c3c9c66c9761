// The one error type of the plugin room.
#pragma once

#include <stdexcept>

namespace switchboard::plugin {

// Thrown for a refused operation (bad input, a library that fails validation
// or its canary, a swap the new version refused). The message is one line,
// meant for an operator; when it is thrown nothing in the manager changed.
class PluginError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace switchboard::plugin
