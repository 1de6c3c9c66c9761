#include "net/endpoint.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <stdexcept>

namespace switchboard::net {
namespace {

sockaddr_storage ipv4(const char* address, std::uint16_t port) {
  sockaddr_storage storage{};
  auto* in = reinterpret_cast<sockaddr_in*>(&storage);
  in->sin_family = AF_INET;
  in->sin_port = htons(port);
  EXPECT_EQ(::inet_pton(AF_INET, address, &in->sin_addr), 1);
  return storage;
}

// IPv4 peers are formatted by hand (not inet_ntop): every octet and port width.
TEST(Endpoint, DescribesPeerAddresses) {
  EXPECT_EQ(describeAddress(ipv4("127.0.0.1", 54321)), "127.0.0.1:54321");
  EXPECT_EQ(describeAddress(ipv4("0.0.0.0", 0)), "0.0.0.0:0");
  EXPECT_EQ(describeAddress(ipv4("255.255.255.255", 65535)), "255.255.255.255:65535");
  EXPECT_EQ(describeAddress(ipv4("10.9.200.7", 80)), "10.9.200.7:80");
  sockaddr_storage v6{};
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&v6);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(443);
  in6->sin6_addr = in6addr_loopback;
  EXPECT_EQ(describeAddress(v6), "[::1]:443");
  sockaddr_storage unix{};
  unix.ss_family = AF_UNIX;
  EXPECT_EQ(describeAddress(unix), "unix");
}

TEST(Endpoint, ParsesTcpHostAndPort) {
  Endpoint endpoint = Endpoint::parse("127.0.0.1:5222");
  EXPECT_EQ(endpoint.kind, Endpoint::Kind::kTcp);
  EXPECT_EQ(endpoint.host, "127.0.0.1");
  EXPECT_EQ(endpoint.port, 5222);
  EXPECT_EQ(endpoint.text(), "127.0.0.1:5222");
}

TEST(Endpoint, ParsesBracketedIpv6AndEmptyHost) {
  Endpoint v6 = Endpoint::parse("[::1]:80");
  EXPECT_EQ(v6.host, "::1");
  EXPECT_EQ(v6.port, 80);
  EXPECT_EQ(v6.text(), "[::1]:80");
  Endpoint any = Endpoint::parse(":0");
  EXPECT_EQ(any.host, "");
  EXPECT_EQ(any.port, 0);
}

TEST(Endpoint, ParsesUnixPaths) {
  Endpoint path = Endpoint::parse("/run/switchboard/admin.sock");
  EXPECT_EQ(path.kind, Endpoint::Kind::kUnix);
  EXPECT_EQ(path.path, "/run/switchboard/admin.sock");
  Endpoint prefixed = Endpoint::parse("unix:admin.sock");
  EXPECT_EQ(prefixed.kind, Endpoint::Kind::kUnix);
  EXPECT_EQ(prefixed.path, "admin.sock");
}

TEST(Endpoint, RejectsMalformedText) {
  EXPECT_THROW(Endpoint::parse("localhost"), std::invalid_argument);
  EXPECT_THROW(Endpoint::parse("localhost:http"), std::invalid_argument);
  EXPECT_THROW(Endpoint::parse("localhost:65536"), std::invalid_argument);
  EXPECT_THROW(Endpoint::parse("localhost:"), std::invalid_argument);
  EXPECT_THROW(Endpoint::parse("unix:"), std::invalid_argument);
}

TEST(Endpoint, ListeningOnABadAddressSaysWhy) {
  try {
    openListeningSocket(Endpoint::parse("203.0.113.77:0"), false);  // not a local address
    FAIL() << "bind to a foreign address succeeded";
  } catch (std::runtime_error& error) {
    EXPECT_EQ(std::string(error.what()),
              "cannot listen on 203.0.113.77:0: Cannot assign requested address");
  }
}

}  // namespace
}  // namespace switchboard::net
