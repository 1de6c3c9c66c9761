#include "web/web_access.h"

#include <algorithm>

namespace switchboard::web {
namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

}  // namespace

std::string addressWithoutPort(const std::string& peer) {
  if (!peer.empty() && peer.front() == '[') {
    auto close = peer.find(']');
    return close == std::string::npos ? peer : peer.substr(1, close - 1);
  }
  auto colon = peer.rfind(':');
  if (colon == std::string::npos || peer.find(':') != colon) return peer;
  return peer.substr(0, colon);
}

WebAccess::WebAccess(std::vector<std::string> allowedOrigins,
                     std::vector<std::string> trustedProxies)
    : allowedOrigins_(std::move(allowedOrigins)) {
  for (auto& proxy : trustedProxies) trustedProxies_.push_back(addressWithoutPort(proxy));
}

std::optional<std::string> WebAccess::refuseOrigin(std::optional<std::string_view> origin,
                                                   std::optional<std::string_view> host) const {
  if (!origin) return std::nullopt;
  if (allowedOrigins_.empty()) {
    if (host &&
        (*origin == "http://" + std::string(*host) || *origin == "https://" + std::string(*host))) {
      return std::nullopt;
    }
    return "origin " + std::string(*origin) + " is not this server's own (host " +
           std::string(host.value_or("")) + "); list it in --web-origins";
  }
  for (const auto& allowed : allowedOrigins_) {
    if (allowed == "*" || allowed == *origin) return std::nullopt;
  }
  return "origin " + std::string(*origin) + " is not in --web-origins";
}

std::string WebAccess::effectivePeer(const std::string& socketPeer,
                                     std::optional<std::string_view> forwardedFor) const {
  if (!forwardedFor) return socketPeer;
  auto socketAddress = addressWithoutPort(socketPeer);
  if (std::find(trustedProxies_.begin(), trustedProxies_.end(), socketAddress) ==
      trustedProxies_.end()) {
    return socketPeer;
  }
  std::string_view list = *forwardedFor;
  auto comma = list.rfind(',');
  std::string last(trim(comma == std::string_view::npos ? list : list.substr(comma + 1)));
  if (last.empty()) return socketPeer;
  // The header may carry "[v6]:port" or "v4:port" forms; keep only the address.
  last = addressWithoutPort(last);
  if (last.find(':') != std::string::npos) return "[" + last + "]:0";
  return last + ":0";
}

}  // namespace switchboard::web
