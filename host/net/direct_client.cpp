#include "net/direct_client.h"

#include <kj/debug.h>

namespace switchboard::net {
namespace {

// The results of a finished call, for calls pipelined on them (capnp's LocalPipeline).
class ResultsPipeline final : public capnp::PipelineHook, public kj::Refcounted {
 public:
  explicit ResultsPipeline(kj::Own<capnp::CallContextHook> context)
      : context_(kj::mv(context)), results_(context_->getResults(capnp::MessageSize{0, 0})) {}

  kj::Own<capnp::PipelineHook> addRef() override { return kj::addRef(*this); }
  kj::Own<capnp::ClientHook> getPipelinedCap(kj::ArrayPtr<const capnp::PipelineOp> ops) override {
    return results_.getPipelinedCap(ops);
  }

 private:
  kj::Own<capnp::CallContextHook> context_;
  capnp::AnyPointer::Reader results_;
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
    auto forked = done.attach(kj::addRef(*this)).fork();
    kj::Promise<kj::Own<capnp::PipelineHook>> results = forked.addBranch().then(
        [context = context->addRef()]() mutable -> kj::Own<capnp::PipelineHook> {
          context->releaseParams();
          return kj::refcounted<ResultsPipeline>(kj::mv(context));
        });
    return {forked.addBranch().attach(kj::mv(context)),
            capnp::newLocalPromisePipeline(kj::mv(results))};
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
