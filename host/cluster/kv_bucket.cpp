#include "cluster/kv_bucket.h"

#include <nats/nats.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>

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

// How long a bucket may take to answer after it was created or bound.
constexpr auto kReadyWithin = std::chrono::seconds(10);

// A JetStream publish to a stream that has not subscribed to its subjects yet
// gets NATS_NO_RESPONDERS: nothing received it, so nothing was stored, and the
// same publish can be made again. nats-server lists a new stream before it
// subscribes it to its subjects (a few milliseconds: its files are set up in
// between), and answers a second create of the same stream (another node's)
// at once from that listing: on a fresh cluster the nodes' first writes meet
// exactly that window (docs/cluster.md). Runs `publish` again, with a growing
// pause, while it gets no responders, for up to kReadyWithin.
template <class Publish>
natsStatus untilResponders(Publish&& publish) {
  auto deadline = std::chrono::steady_clock::now() + kReadyWithin;
  auto pause = std::chrono::milliseconds(2);
  for (;;) {
    natsStatus status = publish();
    if (status != NATS_NO_RESPONDERS || std::chrono::steady_clock::now() >= deadline) {
      return status;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
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
  try {
    awaitSubjects();
  } catch (...) {
    kvStore_Destroy(std::exchange(store_, nullptr));
    throw;
  }
  return store_;
}

// The probe expects a last sequence no stream has: the stream refuses it
// ("wrong last sequence") and stores nothing, which proves it is listening.
void awaitStreamListening(NatsLink& link, const std::string& subject, const std::string& what) {
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.ExpectLastSeq = UINT64_MAX;
  jsErrCode error = static_cast<jsErrCode>(0);
  natsStatus status = untilResponders([&] {
    jsPubAck* ack = nullptr;
    natsStatus s = js_Publish(&ack, link.jetStream(), subject.c_str(), "", 0, &options, &error);
    jsPubAck_Destroy(ack);
    return s;
  });
  if (status == NATS_OK || error != 0) return;  // the stream answered
  requireOk(status, what + " did not answer");
}

// A get made before the stream subscribed to its subjects is not answered at
// all (a time-out), so a bucket is used only once a publish to it is answered.
void KvBucket::awaitSubjects() {
  awaitStreamListening(link_, "$KV." + options_.name + ".sb_ready_probe",
                       "key-value bucket " + options_.name);
}

void KvBucket::open() {
  store();
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
  kvStore* kv = store();
  requireOk(untilResponders([&] {
              return kvStore_Put(&revision, kv, key.c_str(), bytes.data(),
                                 static_cast<int>(bytes.size()));
            }),
            options_.name + " put " + key);
  return revision;
}

bool KvBucket::create(const std::string& key, const std::string& bytes) {
  std::uint64_t revision = 0;
  kvStore* kv = store();
  natsStatus status = untilResponders([&] {
    return kvStore_Create(&revision, kv, key.c_str(), bytes.data(), static_cast<int>(bytes.size()));
  });
  if (status == NATS_OK) return true;
  // Refused: either the key is taken (the answer) or NATS failed (an error).
  if (get(key)) return false;
  requireOk(status, options_.name + " create " + key);
  return false;
}

bool KvBucket::update(const std::string& key, const std::string& bytes, std::uint64_t revision) {
  std::uint64_t written = 0;
  kvStore* kv = store();
  natsStatus status = untilResponders([&] {
    return kvStore_Update(&written, kv, key.c_str(), bytes.data(), static_cast<int>(bytes.size()),
                          revision);
  });
  if (status == NATS_OK) return true;
  auto now = get(key);
  if (!now || now->revision != revision) return false;
  requireOk(status, options_.name + " update " + key);
  return false;
}

void KvBucket::remove(const std::string& key) {
  kvStore* kv = store();
  requireOk(untilResponders([&] { return kvStore_Delete(kv, key.c_str()); }),
            options_.name + " delete " + key);
}

std::vector<std::pair<std::string, KvValue>> KvBucket::values(const std::string& pattern) {
  kvWatchOptions options;
  kvWatchOptions_Init(&options);
  options.IgnoreDeletes = true;
  kvWatcher* raw = nullptr;
  requireOk(kvStore_Watch(&raw, store(), pattern.c_str(), &options),
            options_.name + " watch " + pattern);
  std::unique_ptr<kvWatcher, void (*)(kvWatcher*)> watcher(raw, kvWatcher_Destroy);
  std::vector<std::pair<std::string, KvValue>> out;
  for (;;) {
    kvEntry* next = nullptr;
    natsStatus status =
        kvWatcher_Next(&next, watcher.get(), link_.options().operationTimeout.count());
    OwnedEntry owned(next);
    requireOk(status, options_.name + " watch " + pattern);
    if (next == nullptr) break;  // the marker: every value there was is in
    if (auto value = liveValue(next)) out.emplace_back(kvEntry_Key(next), std::move(*value));
  }
  return out;
}

// Not kvStore_Keys: that is a watch, and a key rewritten while it runs can be
// listed twice or not at all (history 1: its old value goes before the watch
// reaches it, and the new one comes after the watch's end marker). The
// stream's own list of subjects is one snapshot.
std::vector<std::string> KvBucket::keys(const std::string& prefix) {
  store();
  std::string head = "$KV." + options_.name + ".";
  // A prefix of whole tokens filters on the server; any other, here.
  std::string filter = head + (!prefix.empty() && prefix.back() == '.' ? prefix : "") + ">";
  jsOptions options;
  jsOptions_Init(&options);
  options.Stream.Info.SubjectsFilter = filter.c_str();
  jsStreamInfo* raw = nullptr;
  jsErrCode error = static_cast<jsErrCode>(0);
  requireOk(
      js_GetStreamInfo(&raw, link_.jetStream(), ("KV_" + options_.name).c_str(), &options, &error),
      options_.name + " keys");
  std::unique_ptr<jsStreamInfo, void (*)(jsStreamInfo*)> info(raw, jsStreamInfo_Destroy);
  std::vector<std::string> out;
  if (info->State.Subjects != nullptr) {
    for (int i = 0; i < info->State.Subjects->Count; ++i) {
      std::string subject(info->State.Subjects->List[i].Subject);
      if (subject.compare(0, head.size(), head) != 0) continue;
      std::string key = subject.substr(head.size());
      if (key.compare(0, prefix.size(), prefix) == 0) out.push_back(std::move(key));
    }
  }
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
