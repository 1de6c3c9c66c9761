#include "net/socket_registration.h"

#include <capnp/common.h>
#include <unistd.h>
#include <asio/detail/reactor_op.hpp>
#include <asio/version.hpp>

#include <system_error>
#include <type_traits>
#include <utility>

// Checked against these versions: epoll_reactor::start_op() with allow_speculative issues no
// epoll_ctl for a read operation (and one, to add EPOLLOUT, for the first write operation);
// perform_io() calls every queued operation of a direction on each edge and keeps one that
// returns not_done; deregister_descriptor() hands queued operations back as aborted without
// performing them. kj::_::PromiseNode (a node of our own, below) is KJ 0.9's.
static_assert(ASIO_VERSION / 100 == 1022, "SocketRegistration was checked against Asio 1.22");
static_assert(std::is_same_v<asio::detail::reactor, asio::detail::epoll_reactor>,
              "SocketRegistration needs Asio's epoll reactor");
static_assert(CAPNP_VERSION_MAJOR == 0 && CAPNP_VERSION_MINOR == 9,
              "SocketRegistration's promise node was checked against KJ 0.9");

namespace switchboard::net {
namespace {

// One direction's standing watch: queued for the registration's whole life, it reports every
// edge to the registration and stays queued (not_done). Deregistration hands it back to the
// scheduler as aborted, which deletes it; it never touches the registration after that.
class StandingWatch final : public asio::detail::reactor_op {
 public:
  StandingWatch(SocketRegistration& owner, SocketRegistration::Edge edge)
      : reactor_op(asio::error_code(), &StandingWatch::perform, &StandingWatch::complete),
        owner_(owner),
        edge_(edge) {}

 private:
  static status perform(reactor_op* base) {
    auto* self = static_cast<StandingWatch*>(base);
    self->owner_.onEdge(self->edge_);
    return not_done;
  }
  // Runs (or is destroyed, owner null) only once the descriptor was deregistered.
  static void complete(void*, asio::detail::scheduler_operation* base, const asio::error_code&,
                       std::size_t) {
    delete static_cast<StandingWatch*>(base);
  }

  SocketRegistration& owner_;
  SocketRegistration::Edge edge_;
};

}  // namespace

// The node of a whenReadable() promise: no kj::Exception slot (a kj::newAdaptedPromise node
// carries ~400 bytes for one), and an idle connection always has one pending.
class SocketRegistration::ReadWaiter final : public kj::_::PromiseNode,
                                             public SocketRegistration::ReadListener {
 public:
  explicit ReadWaiter(SocketRegistration& owner) : owner_(&owner) {}
  ~ReadWaiter() {
    if (owner_ != nullptr) owner_->stopListening(*this);
  }

  // Once only (KJ asserts it); the registration forgets this waiter when it calls readable().
  void readable() override {
    owner_ = nullptr;
    onReadyEvent_.arm();
  }
  void registrationGone() override { owner_ = nullptr; }

  void onReady(kj::_::Event* event) noexcept override { onReadyEvent_.init(event); }
  void get(kj::_::ExceptionOrValue& output) noexcept override {
    output.as<kj::_::Void>() = kj::_::Void();
  }
  void tracePromise(kj::_::TraceBuilder&, bool) override {}

 private:
  SocketRegistration* owner_;  // null once the registration is gone
  OnReadyEvent onReadyEvent_;
};

SocketRegistration::SocketRegistration(asio::io_context& io, int fd,
                                       std::function<void()> onWritable)
    : reactor_(asio::use_service<asio::detail::reactor>(io)),
      fd_(fd),
      onWritable_(std::move(onWritable)) {
  // As Asio's own descriptor service does: make sure the scheduler polls the reactor.
  reactor_.init_task();
  if (int error = reactor_.register_descriptor(fd_, data_); error != 0) {
    reactor_.cleanup_descriptor_data(data_);
    throw std::system_error(error, std::generic_category(), "epoll registration");
  }
  // The read watch first: start_op() queues a read operation without an epoll_ctl only while
  // no except operation is queued. The except watch (EPOLLPRI, registered by Asio anyway) is
  // called on EPOLLERR and EPOLLHUP too, and on nothing else we expect: it tells a reset or
  // hang-up apart from data.
  startWatch(Edge::kReadable);
  startWatch(Edge::kErrorOrHangUp);
}

SocketRegistration::~SocketRegistration() {
  if (readListener_ != nullptr) std::exchange(readListener_, nullptr)->registrationGone();
  // Closing removes the descriptor from the epoll set: no EPOLL_CTL_DEL needed.
  reactor_.deregister_descriptor(fd_, data_, true);
  ::close(fd_);
  reactor_.cleanup_descriptor_data(data_);
}

void SocketRegistration::startWatch(Edge edge) {
  int op = edge == Edge::kReadable   ? asio::detail::reactor::read_op
           : edge == Edge::kWritable ? asio::detail::reactor::write_op
                                     : asio::detail::reactor::except_op;
  starting_ = true;
  reactor_.start_op(op, fd_, data_, new StandingWatch(*this, edge), false, true);
  starting_ = false;
}

void SocketRegistration::onEdge(Edge edge) {
  // start_op() may call the watch at once ("speculatively"): that is not an edge, and the
  // owner has just seen EAGAIN anyway (or, at registration, mayRead() is already true).
  if (starting_) return;
  if (edge == Edge::kWritable) {
    if (!writeBlocked_) return;
    writeBlocked_ = false;
    onWritable_();
    return;
  }
  // A reset or hang-up: from now on reads go on until they fail or see the end (TCP_INQ
  // reports a pending end of stream, not a pending reset).
  if (edge == Edge::kErrorOrHangUp) hungUp_ = true;
  readable_ = true;
  if (ReadListener* listener = std::exchange(readListener_, nullptr)) listener->readable();
}

kj::Promise<void> SocketRegistration::whenReadable() {
  if (readable_) return kj::READY_NOW;
  auto waiter = kj::heap<ReadWaiter>(*this);
  listenReadable(*waiter);
  return kj::_::PromiseNode::to<kj::Promise<void>>(kj::mv(waiter));
}

void SocketRegistration::listenReadable(ReadListener& listener) {
  readListener_ = &listener;
}

void SocketRegistration::stopListening(ReadListener& listener) {
  if (readListener_ == &listener) readListener_ = nullptr;
}

void SocketRegistration::writeBlocked() {
  writeBlocked_ = true;
  if (!writeWatched_) {
    writeWatched_ = true;
    startWatch(Edge::kWritable);
  }
}

}  // namespace switchboard::net
