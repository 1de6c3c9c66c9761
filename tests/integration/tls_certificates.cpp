#include "tls_certificates.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace switchboard::integration {
namespace {

// Runs `command` in `dir` through the shell; throws with its output when it fails.
void run(const std::filesystem::path& dir, const std::string& command) {
  std::filesystem::path output = dir / "openssl.out";
  std::string line =
      "cd '" + dir.string() + "' && " + command + " > '" + output.string() + "' 2>&1";
  int status = std::system(line.c_str());
  if (status != 0) {
    std::ifstream in(output);
    std::stringstream text;
    text << in.rdbuf();
    throw std::runtime_error("'" + command + "' failed (status " + std::to_string(status) +
                             "): " + text.str());
  }
}

}  // namespace

TlsCertificates::TlsCertificates() {
  const std::string newKey = "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
  const std::filesystem::path& dir = dir_.path();
  run(dir, newKey + " -x509 -days 2 -subj /CN=switchboard-test-ca -keyout ca.key -out ca.pem");
  run(dir, newKey + " -x509 -days 2 -subj /CN=another-ca -keyout other-ca.key -out other-ca.pem");
  run(dir, newKey + " -subj /CN=localhost -keyout server.key -out server.csr");
  std::ofstream(dir / "server.ext") << "subjectAltName=DNS:localhost,DNS:127.0.0.1,IP:127.0.0.1\n";
  run(dir,
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-extfile server.ext -out server.pem");
}

std::vector<std::string> TlsCertificates::hostArgs() const {
  return {"--tls-cert", certFile().string(), "--tls-key", keyFile().string()};
}

}  // namespace switchboard::integration
