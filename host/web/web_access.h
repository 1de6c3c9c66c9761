// Who may open the web endpoint's RPC WebSocket, and which address a request counts as.
//
// Origin policy (browsers always send Origin on a WebSocket handshake; other clients may not):
//  - no Origin header: allowed (not a browser, so no cross-site page is driving it);
//  - an empty allow-list: only the page's own origin, i.e. Origin is "http://" or
//    "https://" followed by the request's Host header;
//  - otherwise Origin must equal one entry exactly ("https://chat.example.com"), or an
//    entry is "*" (any origin).
//
// Peer address: the socket's peer ("1.2.3.4:5678", "[::1]:5678"), unless that address is a
// trusted proxy and the request carries X-Forwarded-For: then the right-most address of
// that header (the one the proxy itself appended), with port 0 ("5.6.7.8:0", "[2001:db8::1]:0").
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::web {

class WebAccess {
 public:
  WebAccess(std::vector<std::string> allowedOrigins, std::vector<std::string> trustedProxies);

  // Empty when allowed; else the reason, one sentence ("origin http://evil.test is not allowed").
  std::optional<std::string> refuseOrigin(std::optional<std::string_view> origin,
                                          std::optional<std::string_view> host) const;

  // The address the request counts as, for per-address limits (see above).
  std::string effectivePeer(const std::string& socketPeer,
                            std::optional<std::string_view> forwardedFor) const;

 private:
  std::vector<std::string> allowedOrigins_;
  std::vector<std::string> trustedProxies_;  // addresses, without port or brackets
};

// "1.2.3.4:5678" -> "1.2.3.4", "[::1]:5678" -> "::1"; anything else unchanged.
std::string addressWithoutPort(const std::string& peer);

}  // namespace switchboard::web
