#include "admin/prometheus_text.h"

#include <gtest/gtest.h>

namespace switchboard::admin {
namespace {

TEST(PrometheusText, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(PrometheusText::escapeLabelValue(R"(a\b"c)"
                                             "\nd"),
            R"(a\\b\"c\nd)");
  EXPECT_EQ(PrometheusText::escapeHelp("x\\y\nz \"q\""), "x\\\\y\\nz \"q\"");
}

TEST(PrometheusText, WritesHelpAndTypeOncePerFamily) {
  PrometheusText out;
  out.family("m_total", "counter", "things");
  out.sample("m_total", {{"kind", "a\"b"}}, std::uint64_t{3});
  out.family("m_total", "counter", "things");
  out.sample("m_total", {{"kind", "c"}, {"version", "1.0"}}, std::uint64_t{4});
  out.family("g", "gauge", "ratio");
  out.sample("g", {}, 0.25);
  EXPECT_EQ(out.text(),
            "# HELP m_total things\n# TYPE m_total counter\n"
            "m_total{kind=\"a\\\"b\"} 3\n"
            "m_total{kind=\"c\",version=\"1.0\"} 4\n"
            "# HELP g ratio\n# TYPE g gauge\ng 0.25\n");
}

TEST(PrometheusText, FormatsSpecialDoubles) {
  EXPECT_EQ(PrometheusText::formatDouble(1e-5), "1e-05");
  EXPECT_EQ(PrometheusText::formatDouble(2.0), "2");
  EXPECT_EQ(PrometheusText::formatDouble(1.0 / 0.0), "+Inf");
}

}  // namespace
}  // namespace switchboard::admin
