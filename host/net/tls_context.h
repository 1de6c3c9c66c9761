#pragma once
// TLS for the phone port: kj::TlsContext objects made from PEM files, for the server side
// (a certificate chain and its private key) and the client side (the CAs to trust).
//
// Both functions read and check their files at once, on the calling thread, so a bad file is
// a plain error at start-up (or at client construction) rather than a failed handshake later.
// They throw std::runtime_error with a one-line message naming the file:
//   "cannot read TLS certificate file /etc/sb/cert.pem: No such file or directory"
//   "TLS key file /etc/sb/key.pem holds no PEM private key (...)"
//   "TLS key file /etc/sb/key.pem does not match certificate file /etc/sb/cert.pem"
//
// A context holds no KJ event-loop state (no timer is given to it): one context may be
// shared by every network thread, each wrapping only streams of its own loop. Streams made by
// wrapServer()/wrapClient() keep what they need of the context alive by themselves (OpenSSL
// reference counts), but the owner keeps the context for as long as it wraps streams.
//
// Protocol: TLS 1.2 or later, kj-tls's cipher list (Mozilla "intermediate"). No client
// certificates are asked for: phones prove who they are with their device key.

#include <kj/compat/tls.h>

#include <memory>
#include <string>

namespace switchboard::net {

// The server side: presents the chain in `certFile` (leaf first, PEM) with the key in
// `keyFile` (PEM, unencrypted).
std::shared_ptr<kj::TlsContext> makeServerTlsContext(const std::string& certFile,
                                                     const std::string& keyFile);

// The client side: trusts exactly the certificates in `caFile` (PEM, one or more; the
// system's trust store is not consulted) and checks the server's name against its
// certificate (wrapClient's expectedServerHostname).
std::shared_ptr<kj::TlsContext> makeClientTlsContext(const std::string& caFile);

}  // namespace switchboard::net
