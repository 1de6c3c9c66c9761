#include "net/tls_context.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace switchboard::net {
namespace {

std::string readFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error("cannot read TLS " + std::string(what) + " file " + path + ": " +
                             std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    throw std::runtime_error("cannot read TLS " + std::string(what) + " file " + path + ": " +
                             std::strerror(errno));
  }
  return text.str();
}

// kj-tls reports OpenSSL failures as "OpenSSL error; message = error:...": keep the message.
std::string describe(const kj::Exception& exception) {
  return exception.getDescription().cStr();
}

template <class Parse>
auto parsePem(const std::string& path, const char* what, Parse&& parse) {
  try {
    return parse();
  } catch (kj::Exception& exception) {
    throw std::runtime_error("TLS " + std::string(what) + " file " + path + " holds no PEM " +
                             what + " (" + describe(exception) + ")");
  }
}

// OpenSSL keeps a key that does not match the certificate out of the context without an error
// (the handshake would fail later, for every client), so the pair is checked here.
bool keyMatchesCertificate(const std::string& certPem, const std::string& keyPem) {
  BIO* certBio = BIO_new_mem_buf(certPem.data(), static_cast<int>(certPem.size()));
  BIO* keyBio = BIO_new_mem_buf(keyPem.data(), static_cast<int>(keyPem.size()));
  X509* cert = certBio ? PEM_read_bio_X509(certBio, nullptr, nullptr, nullptr) : nullptr;
  EVP_PKEY* key = keyBio ? PEM_read_bio_PrivateKey(keyBio, nullptr, nullptr, nullptr) : nullptr;
  bool matches = cert != nullptr && key != nullptr && X509_check_private_key(cert, key) == 1;
  EVP_PKEY_free(key);
  X509_free(cert);
  BIO_free(keyBio);
  BIO_free(certBio);
  ERR_clear_error();
  return matches;
}

// Each "-----BEGIN CERTIFICATE-----" block of a PEM file, as its own text: kj::TlsContext
// trusts only the first certificate of each TlsCertificate it is given.
std::vector<std::string> certificateBlocks(const std::string& pem) {
  static constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
  static constexpr std::string_view kEnd = "-----END CERTIFICATE-----";
  std::vector<std::string> blocks;
  size_t at = 0;
  while ((at = pem.find(kBegin, at)) != std::string::npos) {
    size_t end = pem.find(kEnd, at);
    if (end == std::string::npos) break;
    end += kEnd.size();
    blocks.push_back(pem.substr(at, end - at) + "\n");
    at = end;
  }
  return blocks;
}

kj::TlsContext::Options commonOptions() {
  kj::TlsContext::Options options;
  options.minVersion = kj::TlsVersion::TLS_1_2;
  return options;
}

std::shared_ptr<kj::TlsContext> makeContext(kj::TlsContext::Options& options,
                                            const std::string& files) {
  try {
    return std::make_shared<kj::TlsContext>(kj::mv(options));
  } catch (kj::Exception& exception) {
    throw std::runtime_error("cannot set up TLS with " + files + ": " + describe(exception));
  }
}

}  // namespace

std::shared_ptr<kj::TlsContext> makeServerTlsContext(const std::string& certFile,
                                                     const std::string& keyFile) {
  std::string certPem = readFile(certFile, "certificate");
  std::string keyPem = readFile(keyFile, "key");
  kj::TlsCertificate certificate = parsePem(certFile, "certificate", [&] {
    return kj::TlsCertificate(kj::StringPtr(certPem.c_str(), certPem.size()));
  });
  kj::TlsPrivateKey key = parsePem(keyFile, "key", [&] {
    return kj::TlsPrivateKey(kj::StringPtr(keyPem.c_str(), keyPem.size()));
  });
  if (!keyMatchesCertificate(certPem, keyPem)) {
    throw std::runtime_error("TLS key file " + keyFile + " does not match certificate file " +
                             certFile);
  }
  kj::TlsKeypair keypair{kj::mv(key), kj::mv(certificate)};
  kj::TlsContext::Options options = commonOptions();
  options.useSystemTrustStore = false;  // it verifies no peer: clients present no certificate
  options.defaultKeypair = keypair;     // copied into the context (reference counted)
  return makeContext(options, certFile + " and " + keyFile);
}

std::shared_ptr<kj::TlsContext> makeClientTlsContext(const std::string& caFile) {
  std::string pem = readFile(caFile, "CA");
  std::vector<std::string> blocks = certificateBlocks(pem);
  if (blocks.empty()) {
    throw std::runtime_error("TLS CA file " + caFile + " holds no PEM certificate");
  }
  std::vector<kj::TlsCertificate> trusted;
  for (const std::string& block : blocks) {
    trusted.push_back(parsePem(caFile, "CA", [&] {
      return kj::TlsCertificate(kj::StringPtr(block.c_str(), block.size()));
    }));
  }
  kj::TlsContext::Options options = commonOptions();
  options.useSystemTrustStore = false;
  options.trustedCertificates = kj::arrayPtr(trusted.data(), trusted.size());
  return makeContext(options, caFile);
}

}  // namespace switchboard::net
