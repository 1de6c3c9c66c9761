#include "net/method_watch.h"

#include <kj/debug.h>

namespace switchboard::net {
namespace {

class MethodWatch final : public capnp::Capability::Server {
 public:
  MethodWatch(capnp::Capability::Client inner, uint64_t interfaceId, uint16_t methodId,
              std::function<void()> onSuccess)
      : inner_(kj::mv(inner)),
        interfaceId_(interfaceId),
        methodId_(methodId),
        onSuccess_(std::move(onSuccess)) {}

  DispatchCallResult dispatchCall(
      uint64_t interfaceId, uint16_t methodId,
      capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    auto params = context.getParams();
    auto request = inner_.typelessRequest(interfaceId, methodId, params.targetSize());
    request.set(params);
    context.releaseParams();
    bool watched = interfaceId == interfaceId_ && methodId == methodId_;
    auto done = request.send().then(
        [this, context, watched](capnp::Response<capnp::AnyPointer>&& response) mutable {
          context.getResults(response.targetSize()).set(response);
          if (watched) onSuccess_();
        });
    return {kj::mv(done), false};
  }

 private:
  capnp::Capability::Client inner_;
  const uint64_t interfaceId_;
  const uint16_t methodId_;
  std::function<void()> onSuccess_;
};

}  // namespace

capnp::Capability::Client watchMethod(capnp::Capability::Client inner, uint64_t interfaceId,
                                      uint16_t methodId, std::function<void()> onSuccess) {
  return kj::heap<MethodWatch>(kj::mv(inner), interfaceId, methodId, std::move(onSuccess));
}

}  // namespace switchboard::net
