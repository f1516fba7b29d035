// The stage profiler: scopes add calls and time only while enabled; stages keep first-seen order.
#include <gtest/gtest.h>

#include <thread>

#include "core/profile.h"

namespace sa2va {
namespace {

TEST(Profile, ScopesCountOnlyWhileEnabled) {
  profile::set_enabled(false);
  profile::reset();
  { const profile::Scope timed("stage.off"); }
  EXPECT_TRUE(profile::entries().empty());

  profile::set_enabled(true);
  for (int i = 0; i < 3; ++i) {
    const profile::Scope timed("stage.a");
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  { const profile::Scope timed("stage.b"); }
  profile::set_enabled(false);
  { const profile::Scope timed("stage.a"); }

  const auto entries = profile::entries();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].stage, "stage.a");
  EXPECT_EQ(entries[0].calls, 3);
  EXPECT_GE(entries[0].seconds, 0.006);
  EXPECT_EQ(entries[1].stage, "stage.b");
  EXPECT_EQ(entries[1].calls, 1);
  const std::string table = profile::report();
  EXPECT_NE(table.find("stage.a"), std::string::npos) << table;
  EXPECT_NE(table.find("    3 "), std::string::npos) << table;
  profile::reset();
  EXPECT_TRUE(profile::entries().empty());
}

}  // namespace
}  // namespace sa2va
