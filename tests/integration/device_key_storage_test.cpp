// Device keys at rest, against the real host binary: each key is 32 random
// bytes, and the data dir holds only its BLAKE2b hash, never the key itself
// (not in the database, its WAL, or any other file), raw or as hex.
#include <gtest/gtest.h>
#include <sodium.h>

#include <fstream>
#include <iterator>
#include <set>

#include "database_file.h"
#include "recording_phone.h"
#include "running_host.h"

namespace switchboard::integration {
namespace {

std::string hexOf(const std::string& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

std::string blake2b(const std::string& key) {
  std::string hash(crypto_generichash_BYTES, '\0');
  crypto_generichash(reinterpret_cast<unsigned char*>(hash.data()), hash.size(),
                     reinterpret_cast<const unsigned char*>(key.data()), key.size(), nullptr, 0);
  return hash;
}

// Every regular file under `dir` with its bytes.
std::vector<std::pair<std::filesystem::path, std::string>> filesUnder(
    const std::filesystem::path& dir) {
  std::vector<std::pair<std::filesystem::path, std::string>> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    files.emplace_back(entry.path(), std::string(std::istreambuf_iterator<char>(in), {}));
  }
  return files;
}

TEST(DeviceKeyStorage, KeysAreThirtyTwoRandomBytesStoredOnlyAsTheirHash) {
  ASSERT_GE(sodium_init(), 0);
  RunningHost host;
  host.start();
  std::vector<std::unique_ptr<RecordingPhone>> phones;
  std::set<std::string> keys;
  for (int i = 0; i < 5; ++i) {
    phones.push_back(
        std::make_unique<RecordingPhone>(host.clientOptions(), "+1555000080" + std::to_string(i)));
    phones.back()->registerAndLogin(host.sms());
    const std::string& key = phones.back()->key();
    EXPECT_EQ(key.size(), 32u);
    keys.insert(key);
  }
  EXPECT_EQ(keys.size(), 5u) << "two registrations got the same key";
  // A second device for the first phone: a fresh key, the old one's hash gone.
  std::string replaced = phones[0]->key();
  client::Client second(host.clientOptions());
  std::string fresh = registerPhone(second, host.sms(), phones[0]->number(), "second");
  EXPECT_EQ(fresh.size(), 32u);
  EXPECT_NE(fresh, replaced);

  DatabaseFile db(host.dataDir());
  EXPECT_EQ(db.integer("SELECT count(*) FROM devices"), 5);
  for (std::size_t i = 0; i < phones.size(); ++i) {
    std::string key = i == 0 ? fresh : phones[i]->key();
    auto stored = db.column("SELECT key_hash FROM devices WHERE phone = ?", {phones[i]->number()});
    ASSERT_EQ(stored.size(), 1u) << phones[i]->number();
    EXPECT_EQ(stored[0], blake2b(key)) << phones[i]->number();
    EXPECT_NE(stored[0], key);
  }
  EXPECT_EQ(db.integer("SELECT count(*) FROM devices WHERE key_hash = ?", {blake2b(replaced)}), 0);

  // The keys in the clear appear in no file of the data dir, running and stopped
  // (the stop checkpoints the WAL into the main file).
  std::vector<std::string> secrets(keys.begin(), keys.end());
  secrets.push_back(fresh);
  for (int pass = 0; pass < 2; ++pass) {
    auto files = filesUnder(host.dataDir());
    ASSERT_FALSE(files.empty());
    bool sawDatabase = false;
    for (const auto& [path, bytes] : files) {
      sawDatabase |= path == DatabaseFile::pathIn(host.dataDir());
      for (const auto& key : secrets) {
        EXPECT_EQ(bytes.find(key), std::string::npos) << "a device key in clear in " << path;
        EXPECT_EQ(bytes.find(hexOf(key)), std::string::npos) << "a device key as hex in " << path;
      }
    }
    EXPECT_TRUE(sawDatabase);
    if (pass == 0) host.stop();
  }
  EXPECT_EQ(host.log().find(hexOf(fresh)), std::string::npos) << "a device key in the log";
}

}  // namespace
}  // namespace switchboard::integration
