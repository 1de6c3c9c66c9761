#pragma once
// Throwaway TLS certificates for tests, made with the openssl command at test time.

#include <filesystem>
#include <string>
#include <vector>

#include "test_support.h"

namespace switchboard::integration {

// In a private temp dir: a CA (ca.pem) and a server certificate it signed (server.pem,
// server.key; P-256, valid two days) naming "localhost" and "127.0.0.1" (the latter also as a
// DNS name: kj-tls checks the expected name as a DNS name, see docs/operations.md), plus a
// second, unrelated CA (other-ca.pem) that signed nothing here. The constructor runs openssl
// and throws std::runtime_error with its output if any step fails.
class TlsCertificates {
 public:
  TlsCertificates();

  std::filesystem::path caFile() const { return dir_.path() / "ca.pem"; }
  std::filesystem::path otherCaFile() const { return dir_.path() / "other-ca.pem"; }
  std::filesystem::path certFile() const { return dir_.path() / "server.pem"; }
  std::filesystem::path keyFile() const { return dir_.path() / "server.key"; }
  // The host's flags for this certificate.
  std::vector<std::string> hostArgs() const;

 private:
  switchboard::testing::TempDir dir_;
};

}  // namespace switchboard::integration
