#pragma once
// A socket registered with its io_context's epoll reactor once, for its whole life, with a
// standing watch on each direction: waiting for readiness costs no system call.

#include <kj/async.h>

#include <asio/io_context.hpp>
// After io_context.hpp, which it needs.
#include <asio/detail/reactor.hpp>

#include <functional>

namespace switchboard::net {

// Why not asio's async_wait: every async_wait on a descriptor with no wait queued issues an
// epoll_ctl(EPOLL_CTL_MOD) (Asio re-arms so a readiness edge that came while nothing waited
// is not lost), which at light load is one system call per RPC message. Here the descriptor is
// added to the reactor's epoll set once (edge-triggered, as Asio registers every descriptor),
// and one operation stays queued per direction for the registration's whole life: the reactor
// calls it on every readiness edge and it only records the edge. So the owner must remember
// what the socket told it, which is what the contract below is about.
//
// Reading: mayRead() starts true and turns true again at every readability edge (data, end
// of stream, an error). The owner calls readWouldBlock() when a read() returned EAGAIN, or
// readDrained() when the kernel said nothing is left (Linux's TCP_INQ hint 0), and reads
// again only once mayRead() is true, waiting with whenReadable(). A read returning fewer
// bytes than asked is not enough: an end of stream or a reset that came with the data raises
// no further edge. A reset is not in TCP_INQ's hint either, so after an error or hang-up edge
// readDrained() no longer clears mayRead(): the owner reads until a read fails or ends.
//
// Writing: after a send() returned EAGAIN the owner calls writeBlocked(); `onWritable` then
// runs at the next writability (or error) edge. The first writeBlocked() adds EPOLLOUT to the
// registration (one epoll_ctl per connection); it stays.
//
// Threading and lifetime: create, use and destroy on the thread running `io`, which must
// outlive this. Owns `fd` (closed by the destructor, which also ends the watches). `onWritable`
// runs from inside Asio's reactor, on that thread: it must only record or post (asio::post),
// never destroy this registration. A whenReadable() promise still pending when the
// registration goes never resolves; it may be dropped later.
//
// This reaches into asio::detail (epoll_reactor::register_descriptor/start_op and
// reactor_op, Asio 1.22 as in Debian 12); the .cpp asserts the version it was checked against.
class SocketRegistration {
 public:
  SocketRegistration(asio::io_context& io, int fd, std::function<void()> onWritable);
  ~SocketRegistration();
  SocketRegistration(const SocketRegistration&) = delete;
  SocketRegistration& operator=(const SocketRegistration&) = delete;

  int fd() const { return fd_; }

  bool mayRead() const { return readable_; }
  // read() returned EAGAIN.
  void readWouldBlock() { readable_ = false; }
  // The kernel said nothing is left (TCP_INQ). Ignored once a reset or hang-up was seen: its
  // error is still to be read.
  void readDrained() { readable_ = hungUp_; }
  // Resolves once mayRead() is true (at once if it is). At most one pending at a time.
  kj::Promise<void> whenReadable();

  // Told of the next readability edge once, from inside the reactor's handling of that edge
  // (on the loop thread, outside any KJ turn, mayRead() already true): it may read the socket,
  // arm KJ events and make promises, never destroy this registration. registrationGone(): the
  // registration went first, and no edge will come.
  class ReadListener {
   public:
    virtual void readable() = 0;
    virtual void registrationGone() = 0;

   protected:
    ~ReadListener() = default;
  };
  // `listener` is told of the next edge; only while !mayRead() and nothing else waits (no
  // whenReadable() promise, no other listener). stopListening(): no longer (if it still was).
  void listenReadable(ReadListener& listener);
  void stopListening(ReadListener& listener);

  void writeBlocked();

  // Implementation details, public for the reactor operation and the promise node (.cpp).
  class ReadWaiter;
  enum class Edge { kReadable, kWritable, kErrorOrHangUp };
  void onEdge(Edge edge);

 private:
  void startWatch(Edge edge);

  asio::detail::reactor& reactor_;
  asio::detail::reactor::per_descriptor_data data_ = nullptr;
  int fd_;
  bool readable_ = true;
  bool hungUp_ = false;
  bool writeBlocked_ = false;
  bool writeWatched_ = false;
  bool starting_ = false;  // a watch is being queued: Asio's speculative call is not an edge
  // Not owned: the pending whenReadable() promise's node, or another listener.
  ReadListener* readListener_ = nullptr;
  std::function<void()> onWritable_;
};

}  // namespace switchboard::net
