#include "cluster/kv_bucket.h"

#include <nats/nats.h>

#include <algorithm>
#include <memory>

#include "cluster/nats_link.h"

namespace switchboard::cluster {

namespace {
struct EntryDeleter {
  void operator()(kvEntry* entry) const { kvEntry_Destroy(entry); }
};
using OwnedEntry = std::unique_ptr<kvEntry, EntryDeleter>;

std::optional<KvValue> liveValue(kvEntry* entry) {
  if (entry == nullptr || kvEntry_Operation(entry) != kvOp_Put) return std::nullopt;
  KvValue value;
  value.bytes.assign(static_cast<const char*>(kvEntry_Value(entry)),
                     static_cast<std::size_t>(kvEntry_ValueLen(entry)));
  value.revision = kvEntry_Revision(entry);
  return value;
}
}  // namespace

KvBucket::KvBucket(NatsLink& link, KvBucketOptions options)
    : link_(link), options_(std::move(options)) {}

KvBucket::~KvBucket() {
  if (store_ != nullptr) kvStore_Destroy(store_);
}

kvStore* KvBucket::store() {
  link_.requireConnected();
  std::lock_guard lock(mutex_);
  if (store_ != nullptr) return store_;
  kvConfig config;
  kvConfig_Init(&config);
  config.Bucket = options_.name.c_str();
  config.History = options_.history;
  config.TTL = std::chrono::duration_cast<std::chrono::nanoseconds>(options_.ttl).count();
  config.StorageType = options_.memoryStorage ? js_MemoryStorage : js_FileStorage;
  // Creating a bucket that exists with the same settings binds to it.
  natsStatus status = js_CreateKeyValue(&store_, link_.jetStream(), &config);
  if (status != NATS_OK) {
    store_ = nullptr;
    requireOk(js_KeyValue(&store_, link_.jetStream(), options_.name.c_str()),
              "key-value bucket " + options_.name);
  }
  return store_;
}

std::optional<KvValue> KvBucket::get(const std::string& key) {
  kvEntry* raw = nullptr;
  natsStatus status = kvStore_Get(&raw, store(), key.c_str());
  OwnedEntry entry(raw);
  if (status == NATS_NOT_FOUND) return std::nullopt;
  requireOk(status, options_.name + " get " + key);
  return liveValue(entry.get());
}

std::uint64_t KvBucket::put(const std::string& key, const std::string& bytes) {
  std::uint64_t revision = 0;
  requireOk(
      kvStore_Put(&revision, store(), key.c_str(), bytes.data(), static_cast<int>(bytes.size())),
      options_.name + " put " + key);
  return revision;
}

bool KvBucket::create(const std::string& key, const std::string& bytes) {
  std::uint64_t revision = 0;
  natsStatus status =
      kvStore_Create(&revision, store(), key.c_str(), bytes.data(), static_cast<int>(bytes.size()));
  if (status == NATS_OK) return true;
  // Refused: either the key is taken (the answer) or NATS failed (an error).
  if (get(key)) return false;
  requireOk(status, options_.name + " create " + key);
  return false;
}

bool KvBucket::update(const std::string& key, const std::string& bytes, std::uint64_t revision) {
  std::uint64_t written = 0;
  natsStatus status = kvStore_Update(&written, store(), key.c_str(), bytes.data(),
                                     static_cast<int>(bytes.size()), revision);
  if (status == NATS_OK) return true;
  auto now = get(key);
  if (!now || now->revision != revision) return false;
  requireOk(status, options_.name + " update " + key);
  return false;
}

void KvBucket::remove(const std::string& key) {
  requireOk(kvStore_Delete(store(), key.c_str()), options_.name + " delete " + key);
}

std::vector<std::string> KvBucket::keys(const std::string& prefix) {
  kvKeysList list{};
  natsStatus status = kvStore_Keys(&list, store(), nullptr);
  std::vector<std::string> out;
  if (status == NATS_NOT_FOUND) return out;  // an empty bucket
  requireOk(status, options_.name + " keys");
  for (int i = 0; i < list.Count; ++i) {
    std::string key(list.Keys[i]);
    if (key.compare(0, prefix.size(), prefix) == 0) out.push_back(std::move(key));
  }
  kvKeysList_Destroy(&list);
  std::sort(out.begin(), out.end());
  return out;
}

void KvBucket::watch(
    const std::function<void(const std::string&, const std::optional<KvValue>&)>& entry,
    const std::function<bool()>& keepGoing, std::chrono::milliseconds poll) {
  kvWatcher* raw = nullptr;
  requireOk(kvStore_WatchAll(&raw, store(), nullptr), options_.name + " watch");
  std::unique_ptr<kvWatcher, void (*)(kvWatcher*)> watcher(raw, kvWatcher_Destroy);
  while (keepGoing()) {
    kvEntry* next = nullptr;
    natsStatus status = kvWatcher_Next(&next, watcher.get(), poll.count());
    OwnedEntry owned(next);
    if (status == NATS_TIMEOUT) continue;
    requireOk(status, options_.name + " watch");
    if (next == nullptr) continue;  // the marker: initial values done
    entry(kvEntry_Key(next), liveValue(next));
  }
}

}  // namespace switchboard::cluster
