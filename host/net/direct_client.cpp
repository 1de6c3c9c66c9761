#include "net/direct_client.h"

#include <kj/debug.h>
#include <kj/vector.h>

namespace switchboard::net {
namespace {

// The results of a call served directly, for calls pipelined on them (capnp's LocalPipeline,
// without the QueuedPipeline and the forked promise in front of it). Told by the call's
// completion: finished (a pipelined capability is then the results' own), failed (a broken
// one with the call's error) or cancelled (dropped unsettled: a broken one). A capability
// asked for before that is a promise, settled with the call.
class DirectPipeline final : public capnp::PipelineHook, public kj::Refcounted {
 public:
  explicit DirectPipeline(kj::Own<capnp::CallContextHook> context) : context_(kj::mv(context)) {}

  kj::Own<capnp::PipelineHook> addRef() override { return kj::addRef(*this); }
  kj::Own<capnp::ClientHook> getPipelinedCap(kj::ArrayPtr<const capnp::PipelineOp> ops) override {
    if (finished_) return results_.getPipelinedCap(ops);
    if (failure_.get() != nullptr) return capnp::newBrokenCap(kj::cp(*failure_));
    auto paf = kj::newPromiseAndFulfiller<void>();
    waiters_.add(kj::mv(paf.fulfiller));
    return capnp::newLocalPromiseClient(paf.promise.then(
        [self = kj::addRef(*this), ops = kj::heapArray(ops)]() -> kj::Own<capnp::ClientHook> {
          return self->results_.getPipelinedCap(ops);
        }));
  }

  void finished() {
    if (settled()) return;
    context_->releaseParams();
    results_ = context_->getResults(capnp::MessageSize{0, 0});
    finished_ = true;
    for (auto& waiter : waiters_) waiter->fulfill();
    waiters_.clear();
  }
  void failed(const kj::Exception& exception) {
    if (settled()) return;
    failure_ = kj::heap<kj::Exception>(kj::cp(exception));
    for (auto& waiter : waiters_) waiter->reject(kj::cp(exception));
    waiters_.clear();
  }
  void cancelled() {
    if (!settled()) failed(KJ_EXCEPTION(DISCONNECTED, "the call was canceled"));
  }

 private:
  bool settled() const { return finished_ || failure_.get() != nullptr; }

  kj::Own<capnp::CallContextHook> context_;
  capnp::AnyPointer::Reader results_;  // once finished
  bool finished_ = false;
  kj::Own<kj::Exception> failure_;  // once failed or cancelled
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> waiters_;
};

// Held by the completion of a directly served call: settles the call's pipeline, as cancelled
// if the completion is dropped before the call finished or failed.
class PipelineSettler {
 public:
  explicit PipelineSettler(kj::Own<DirectPipeline> pipeline) : pipeline_(kj::mv(pipeline)) {}
  PipelineSettler(PipelineSettler&&) = default;
  PipelineSettler& operator=(PipelineSettler&&) = delete;
  ~PipelineSettler() {
    if (pipeline_.get() != nullptr) pipeline_->cancelled();
  }
  DirectPipeline& pipeline() { return *pipeline_; }

 private:
  kj::Own<DirectPipeline> pipeline_;
};

class DirectClient final : public capnp::ClientHook, public kj::Refcounted {
 public:
  explicit DirectClient(kj::Own<capnp::Capability::Server> server) : server_(kj::mv(server)) {}

  capnp::Request<capnp::AnyPointer, capnp::AnyPointer> newCall(
      uint64_t interfaceId, uint16_t methodId, kj::Maybe<capnp::MessageSize> sizeHint) override {
    // In process: a LocalClient over a forwarder to the same server (it keeps this alive).
    capnp::Capability::Client local(kj::heap<Forwarder>(kj::addRef(*this)));
    return capnp::ClientHook::from(kj::mv(local))->newCall(interfaceId, methodId, sizeHint);
  }

  VoidPromiseAndPipeline call(uint64_t interfaceId, uint16_t methodId,
                              kj::Own<capnp::CallContextHook>&& context) override {
    kj::Promise<void> done = kj::evalNow([&] { return dispatch(interfaceId, methodId, *context); });
    auto pipeline = kj::refcounted<DirectPipeline>(kj::mv(context));
    // One node between the call and the RPC system: it settles the pipeline (before the RPC
    // system's own continuation sends the Return) and keeps this client, so the server,
    // alive until the call is done or dropped.
    kj::Promise<void> completion =
        done.then([settler = PipelineSettler(kj::addRef(*pipeline)),
                   self = kj::addRef(*this)]() mutable { settler.pipeline().finished(); },
                  [pipeline = kj::addRef(*pipeline)](kj::Exception&& exception) mutable {
                    pipeline->failed(exception);
                    kj::throwFatalException(kj::mv(exception));
                  });
    return {kj::mv(completion), kj::mv(pipeline)};
  }

  kj::Maybe<capnp::ClientHook&> getResolved() override { return nullptr; }
  kj::Maybe<kj::Promise<kj::Own<capnp::ClientHook>>> whenMoreResolved() override { return nullptr; }
  kj::Own<capnp::ClientHook> addRef() override { return kj::addRef(*this); }
  const void* getBrand() override { return &kBrand; }
  kj::Maybe<int> getFd() override { return server_->getFd(); }

 private:
  // A server for the in-process LocalClient of newCall(): forwards to this one's.
  class Forwarder final : public capnp::Capability::Server {
   public:
    explicit Forwarder(kj::Own<DirectClient> client) : client_(kj::mv(client)) {}
    DispatchCallResult dispatchCall(
        uint64_t interfaceId, uint16_t methodId,
        capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
      return client_->server_->dispatchCall(interfaceId, methodId, context);
    }

   private:
    kj::Own<DirectClient> client_;
  };

  kj::Promise<void> dispatch(uint64_t interfaceId, uint16_t methodId,
                             capnp::CallContextHook& context) {
    auto result = server_->dispatchCall(
        interfaceId, methodId, capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer>(context));
    KJ_REQUIRE(!result.isStreaming, "streaming calls are not served by a direct capability");
    return kj::mv(result.promise);
  }

  static const int kBrand;
  kj::Own<capnp::Capability::Server> server_;
};

const int DirectClient::kBrand = 0;

}  // namespace

capnp::Capability::Client serveDirectly(kj::Own<capnp::Capability::Server> server) {
  return capnp::Capability::Client(kj::refcounted<DirectClient>(kj::mv(server)));
}

}  // namespace switchboard::net
