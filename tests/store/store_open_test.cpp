// Opening the store: where it may and may not put its file.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "store/store.h"
#include "temp_dir.h"

namespace switchboard::store {
namespace {

using testing::TempDir;

std::string openError(const StoreOptions& options) {
  try {
    Store::open(options);
  } catch (const StoreError& e) {
    return e.what();
  }
  return "";
}

void writeFile(const std::filesystem::path& file, const std::string& contents) {
  std::ofstream out(file, std::ios::binary);
  out << contents;
}

TEST(StoreOpen, CreatesMissingNestedDataDir) {
  TempDir dir;
  StoreOptions options;
  options.dataDir = dir.path() / "a" / "b" / "var";
  options.fileName = "custom.db";
  auto store = Store::open(options);
  EXPECT_TRUE(std::filesystem::is_regular_file(options.dataDir / "custom.db"));
  EXPECT_EQ(store->path(), options.dataDir / "custom.db");
}

TEST(StoreOpen, DataDirUnderARegularFileIsAClearError) {
  // Tests run as root, which ignores permission bits: a path through a
  // regular file is unwritable for everyone.
  TempDir dir;
  writeFile(dir.path() / "plain", "not a directory");
  StoreOptions options;
  options.dataDir = dir.path() / "plain" / "var";
  std::string message = openError(options);
  ASSERT_FALSE(message.empty()) << "opened a store under a regular file";
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_NE(message.find("data dir " + options.dataDir.string()), std::string::npos) << message;
  EXPECT_NE(message.find("Not a directory"), std::string::npos) << message;
}

TEST(StoreOpen, DataDirThatIsARegularFileIsAClearError) {
  TempDir dir;
  writeFile(dir.path() / "plain", "not a directory");
  StoreOptions options;
  options.dataDir = dir.path() / "plain";
  std::string message = openError(options);
  ASSERT_FALSE(message.empty());
  EXPECT_NE(message.find(options.dataDir.string()), std::string::npos) << message;
}

TEST(StoreOpen, ForeignFileIsAClearError) {
  TempDir dir;
  writeFile(dir.path() / "switchboard.db", std::string(8192, 'x'));
  StoreOptions options;
  options.dataDir = dir.path();
  std::string message = openError(options);
  EXPECT_NE(message.find("cannot open database " + (dir.path() / "switchboard.db").string()),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("file is not a database"), std::string::npos) << message;
}

TEST(StoreOpen, DatabasePathThatIsADirectoryIsAClearError) {
  TempDir dir;
  std::filesystem::create_directory(dir.path() / "switchboard.db");
  StoreOptions options;
  options.dataDir = dir.path();
  std::string message = openError(options);
  EXPECT_NE(message.find("cannot open database"), std::string::npos) << message;
}

}  // namespace
}  // namespace switchboard::store
