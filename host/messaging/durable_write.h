// A store write as a KJ promise: the promise resolves on the calling loop
// thread once the write is durable (committed with synchronous=FULL), or
// rejects with the write's error (a throw from `fn` included, with its message).
// Call on a network thread. Dropping the promise does not cancel the write.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "net/cross_thread_completion.h"
#include "store/store.h"

namespace switchboard::messaging {

// `fn(Connection&) -> T` runs on the store's writer thread. `afterCommit(T&)`,
// when given, runs on the writer thread right after the commit and before the
// promise resolves: it must only post work elsewhere.
template <class T, class Fn, class AfterCommit = std::nullptr_t>
kj::Promise<T> writeDurably(store::Store& store, Fn fn, AfterCommit afterCommit = nullptr) {
  static_assert(!std::is_void_v<T>, "use a result type (std::monostate for nothing)");
  auto pending = net::makeCompletion<T>();
  auto result = std::make_shared<std::optional<T>>();
  store.write([fn = std::move(fn), result](store::Connection& db) mutable { *result = fn(db); },
              [completion = pending.completion, result,
               afterCommit = std::move(afterCommit)](std::optional<std::string> error) mutable {
                if (error) {
                  completion.fail(*error);
                  return;
                }
                if constexpr (!std::is_same_v<AfterCommit, std::nullptr_t>) afterCommit(**result);
                completion.complete(std::move(**result));
              });
  return kj::mv(pending.promise);
}

// The same for a write with no result: `fn(Connection&)` returns nothing.
template <class Fn>
kj::Promise<void> writeDurably(store::Store& store, Fn fn) {
  return writeDurably<std::monostate>(store,
                                      [fn = std::move(fn)](store::Connection& db) mutable {
                                        fn(db);
                                        return std::monostate{};
                                      })
      .ignoreResult();
}

// Runs `sql`, whose two parameters are `first` and one of `items`, once per item.
template <class First>
void runForEach(store::Connection& db, std::string_view sql, const First& first,
                const std::vector<std::string>& items) {
  auto statement = db.prepare(sql);
  for (const std::string& item : items) {
    statement.reset();
    statement.bind(1, first).bind(2, item).run();
  }
}

}  // namespace switchboard::messaging
