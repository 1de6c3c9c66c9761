// One JetStream key-value bucket, as the cluster room uses it: blocking calls
// for the link's worker thread (or a test's own thread), never a network thread.
//
// The bucket is created on first use (or bound, when another node created it
// already) and used only once it answers: a new bucket is listed by the server
// a moment before it listens, and a fresh cluster's nodes race for that moment
// (kv_bucket.cpp). Every call first requires the link to be connected, so a
// degraded node fails fast with ClusterError instead of waiting for a time-out.
// Conditional writes (create, update at a revision) are how two nodes racing
// for the same key are told apart: exactly one wins, the other gets false.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

struct __kvStore;

namespace switchboard::cluster {

class NatsLink;

struct KvBucketOptions {
  std::string name;             // [a-zA-Z0-9_-]+
  std::chrono::seconds ttl{0};  // 0: values never expire
  std::uint8_t history = 1;     // values kept per key
  bool memoryStorage = false;   // file storage unless asked
};

struct KvValue {
  std::string bytes;
  std::uint64_t revision = 0;
};

// Returns once the JetStream stream that takes `subject` answers a publish
// to it: a new stream is listed by the server a moment before it subscribes
// to its subjects, and a publish or get meanwhile reaches no one. The probe
// expects a last sequence no stream has, so the stream refuses it, storing
// nothing; it is sent again while no one responds, for up to 10 s. Throws
// ClusterError (naming `what`) if the stream never answers. Blocking.
void awaitStreamListening(NatsLink& link, const std::string& subject, const std::string& what);

class KvBucket {
 public:
  KvBucket(NatsLink& link, KvBucketOptions options);
  ~KvBucket();
  KvBucket(const KvBucket&) = delete;
  KvBucket& operator=(const KvBucket&) = delete;

  // Creates or binds the bucket now and waits (bounded) until it answers;
  // every other call does this first. Throws ClusterError.
  void open();
  // The value under `key`; nullopt when absent or deleted.
  std::optional<KvValue> get(const std::string& key);
  std::uint64_t put(const std::string& key, const std::string& bytes);  // returns the revision
  // Writes only if `key` has no live value; false if it has one.
  bool create(const std::string& key, const std::string& bytes);
  // Writes only if `key` is still at `revision`; false if someone wrote since.
  bool update(const std::string& key, const std::string& bytes, std::uint64_t revision);
  void remove(const std::string& key);
  // Keys starting with `prefix` (all when empty), sorted, as one snapshot of the
  // stream: a key whose last write was a delete is listed too, so get() each.
  std::vector<std::string> keys(const std::string& prefix = "");
  // Every live key matching `pattern` (key tokens, with NATS wildcards:
  // "a.*"), with its value, read through one watch: the server pushes them
  // (one consumer made and removed) instead of a get each. A key written
  // while it runs may be missing (as from a listing made before the write).
  std::vector<std::pair<std::string, KvValue>> values(const std::string& pattern);
  // Calls `entry(key, value)` (value nullopt: deleted) for every live key now
  // and then for every change, until `keepGoing()` is false (checked at least
  // every `poll`). Returns then; throws ClusterError when the watch breaks.
  void watch(const std::function<void(const std::string&, const std::optional<KvValue>&)>& entry,
             const std::function<bool()>& keepGoing,
             std::chrono::milliseconds poll = std::chrono::milliseconds(200));

  const std::string& name() const { return options_.name; }

 private:
  __kvStore* store();
  void awaitSubjects();

  NatsLink& link_;
  const KvBucketOptions options_;
  std::mutex mutex_;
  __kvStore* store_ = nullptr;
};

}  // namespace switchboard::cluster
