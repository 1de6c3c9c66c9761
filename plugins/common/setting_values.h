// Reading plugin settings (Plugin::configure): whole numbers with bounds,
// flags, and the message for a key a plugin does not know.
//
// Each function returns an empty string when the value was taken (and writes
// it to `out`), or one sentence saying what is wrong, which configure()
// returns to the host as the reason the version is refused. Header-only,
// compiled into each plugin; no state, safe from any thread.
#pragma once

#include <charconv>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "switchboard/plugin_api.h"

namespace switchboard::plugins {

using Setting = switchboard::plugin::Plugin::Setting;

inline std::string readWholeNumber(const Setting& setting, std::uint64_t min, std::uint64_t max,
                                   std::uint64_t& out) {
  const std::string_view text = setting.value;
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc{} || end != text.data() + text.size() || value < min ||
      value > max) {
    return "bad value \"" + setting.value + "\" for " + setting.key +
           ": expected a whole number from " + std::to_string(min) + " to " + std::to_string(max);
  }
  out = value;
  return {};
}

inline std::string readFlag(const Setting& setting, bool& out) {
  const std::string_view text = setting.value;
  if (text == "true" || text == "yes" || text == "on" || text == "1") {
    out = true;
  } else if (text == "false" || text == "no" || text == "off" || text == "0") {
    out = false;
  } else {
    return "bad value \"" + setting.value + "\" for " + setting.key + ": expected true or false";
  }
  return {};
}

inline std::string unknownSetting(std::string_view kind, const Setting& setting,
                                  std::initializer_list<std::string_view> known) {
  std::string message =
      "unknown setting \"" + setting.key + "\" for the " + std::string(kind) + " plugin";
  if (known.size() == 0) return message + " (it takes no settings)";
  message += " (known:";
  for (const auto key : known) message += " " + std::string(key);
  return message + ")";
}

}  // namespace switchboard::plugins
