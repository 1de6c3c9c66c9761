// Scraping a live host's /metrics in tests: an HTTP GET with kj-http's client,
// and a strict parser of the Prometheus text exposition format.
#pragma once

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/compat/http.h>

#include <cstdlib>
#include <cstring>

#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace switchboard::admin::testing {

struct HttpAnswer {
  unsigned status = 0;
  std::string contentType;
  std::string body;
};

inline HttpAnswer httpGet(const std::string& endpoint, const std::string& path) {
  auto io = kj::setupAsyncIo();
  kj::HttpHeaderTable table;
  auto client =
      kj::newHttpClient(io.provider->getTimer(), table, io.provider->getNetwork(), nullptr);
  std::string url = "http://" + endpoint + path;
  auto response = client->request(kj::HttpMethod::GET, url.c_str(), kj::HttpHeaders(table))
                      .response.wait(io.waitScope);
  HttpAnswer answer;
  answer.status = response.statusCode;
  KJ_IF_MAYBE (type, response.headers->get(kj::HttpHeaderId::CONTENT_TYPE)) {
    answer.contentType = type->cStr();
  }
  answer.body = response.body->readAllText().wait(io.waitScope).cStr();
  return answer;
}

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses the exposition text strictly: every sample belongs to a family
// announced before it with HELP then TYPE; label values are unescaped.
struct Exposition {
  std::map<std::string, std::string> types;
  std::vector<Sample> samples;

  static Exposition parse(const std::string& text) {
    Exposition out;
    std::set<std::string> helped;
    static const std::regex help(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$)");
    static const std::regex type(
        R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary)$)");
    static const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([^ ]+)$)");
    static const std::regex label(R"(^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)\"(,|$))");
    std::size_t start = 0;
    EXPECT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      std::string line = text.substr(start, end - start);
      start = end + 1;
      std::smatch m;
      if (std::regex_match(line, m, help)) {
        helped.insert(m[1]);
      } else if (std::regex_match(line, m, type)) {
        EXPECT_TRUE(helped.count(m[1])) << "TYPE before HELP: " << line;
        EXPECT_FALSE(out.types.count(m[1])) << "family announced twice: " << line;
        out.types[m[1]] = m[2];
      } else if (std::regex_match(line, m, sample)) {
        Sample s;
        s.name = m[1];
        std::string labels = m[3];
        while (!labels.empty()) {
          std::smatch l;
          if (!std::regex_search(labels, l, label)) {
            ADD_FAILURE() << "bad labels in: " << line;
            break;
          }
          std::string value;
          std::string raw = l[2];
          for (std::size_t i = 0; i < raw.size(); ++i) {
            if (raw[i] == '\\' && i + 1 < raw.size()) {
              ++i;
              value += raw[i] == 'n' ? '\n' : raw[i];
            } else {
              value += raw[i];
            }
          }
          s.labels[l[1]] = value;
          labels = l.suffix();
        }
        std::string number = m[4];
        char* rest = nullptr;
        s.value = std::strtod(number.c_str(), &rest);
        EXPECT_EQ(*rest, '\0') << "bad value in: " << line;
        std::string family = s.name;
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
          std::string base = s.name.size() > std::strlen(suffix)
                                 ? s.name.substr(0, s.name.size() - std::strlen(suffix))
                                 : "";
          if (s.name.ends_with(suffix) && out.types.count(base) &&
              (out.types[base] == "histogram" || out.types[base] == "summary")) {
            family = base;
          }
        }
        EXPECT_TRUE(out.types.count(family)) << "sample without TYPE: " << line;
        out.samples.push_back(std::move(s));
      } else {
        ADD_FAILURE() << "unparseable line: '" << line << "'";
      }
    }
    return out;
  }

  std::optional<double> value(const std::string& name,
                              const std::map<std::string, std::string>& labels = {}) const {
    for (const auto& s : samples) {
      if (s.name == name && s.labels == labels) return s.value;
    }
    return std::nullopt;
  }
};

}  // namespace switchboard::admin::testing
