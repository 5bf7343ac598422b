/* weft/net.h: sockets, name resolution, servers, streams and datagrams on
 * the calling task's worker's reactor (net/).
 *
 * Every call that suspends says so and is a cancellation point; the I/O
 * rules of weft/io.h hold here too: a cancelled operation returns only once
 * the kernel is done with the caller's memory (-ECANCELED, or its real
 * result when it completed first: bytes that moved are never lost), and the
 * _until calls take a CLOCK_MONOTONIC deadline (WEFT_NO_DEADLINE = none) and
 * return -ETIMEDOUT when it passes first. weft_close of a socket wakes the
 * tasks waiting on it, on any worker, with -EBADF (weft/io.h).
 *
 * Descriptors made here are always SOCK_CLOEXEC|SOCK_NONBLOCK; the calls
 * still wait for readiness and never return -EAGAIN. Sends use
 * MSG_NOSIGNAL: a peer that went away gives -EPIPE, never SIGPIPE.
 * No call leaves a descriptor open on an error path.
 *
 * Errors, for every call: a negative errno. -EINVAL bad input (a NULL
 * pointer, a malformed address, a call that suspends made outside a task);
 * -EBADF a negative descriptor; -ECANCELED; -ETIMEDOUT; -ECONNRESET the
 * peer reset the connection; -EPIPE writing to a connection the peer
 * closed; -ECONNREFUSED; -ENODATA an incomplete read (asyncio's
 * IncompleteReadError); -ENOBUFS a reader's limit overrun (asyncio's
 * LimitOverrunError: the data stays readable); the kernel's own errors.
 */
#ifndef WEFT_NET_H
#define WEFT_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <weft/core.h>
#include <weft/io.h>

struct iovec;
struct weft_tls_ctx;

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ addresses */

/* An IPv4, IPv6 or Unix-domain socket address (a plain value). len is the
 * address's length for bind/connect; 0 = no address. */
typedef struct weft_addr {
  union {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
    struct sockaddr_un un;
    struct sockaddr_storage storage;
  } u;
  socklen_t len;
} weft_addr;

/* Parse a numeric address: "1.2.3.4:80", "[::1]:80", "[fe80::1%eth0]:80",
 * or a Unix path ("/run/x.sock", "unix:rel/path", "@abstract"). No name
 * resolution (weft_resolve does that). Does not suspend. Any thread.
 * Errors: -EINVAL malformed (a missing or bad port, a bad IP);
 * -ENAMETOOLONG a Unix path longer than sun_path. */
WEFT_API int weft_addr_parse(weft_addr *out, const char *text);

/* A numeric IP ("127.0.0.1", "::1") and a port. Errors: -EINVAL. */
WEFT_API int weft_addr_ip(weft_addr *out, const char *ip, uint16_t port);

/* A Unix-domain address; a leading '@' names the abstract namespace.
 * Errors: -EINVAL empty; -ENAMETOOLONG. */
WEFT_API int weft_addr_unix(weft_addr *out, const char *path);

/* Format as weft_addr_parse reads it ("1.2.3.4:80", "[::1]:80", the path)
 * into buf (NUL-terminated): the length, or -ENOSPC when buf is too small
 * (buf then holds a truncated string), -EINVAL no address. Any thread. */
WEFT_API int weft_addr_format(const weft_addr *a, char *buf, size_t len);

/* The port (host order) of an IP address, or -EINVAL. */
WEFT_API int weft_addr_port(const weft_addr *a);

/* The address family (AF_INET, AF_INET6, AF_UNIX), or -EINVAL. */
WEFT_API int weft_addr_family(const weft_addr *a);

/* getaddrinfo(3) on the blocking pool (a worker never blocks): up to max
 * addresses of host (a name or a numeric address; NULL = the loopback, or
 * the wildcard with WEFT_RESOLVE_PASSIVE) and port into out, in the
 * resolver's order. family: AF_UNSPEC, AF_INET or AF_INET6. Returns the
 * number of addresses (>= 1). Suspends.
 * A numeric host is parsed at once (no suspension, from any thread).
 * Errors: -EINVAL bad arguments, outside a task; -ENOENT no such host
 * (EAI_NONAME, EAI_NODATA; a numeric host of another family); -EAGAIN a
 * temporary resolver failure (EAI_AGAIN) or no pool thread; -ENOMEM;
 * -EIO any other resolver failure; -ECANCELED. */
#define WEFT_RESOLVE_PASSIVE 1u
WEFT_API int weft_resolve(const char *host, uint16_t port, int family, unsigned flags, weft_addr *out,
                          size_t max);

/* ------------------------------------------------------------ sockets */

/* socket(2) with SOCK_CLOEXEC|SOCK_NONBLOCK added. Does not suspend. */
WEFT_API int weft_socket(int family, int type, int protocol);

/* connect(2) fd to a, waiting until it is connected or the deadline:
 * 0 or a negative errno (-ECONNREFUSED, -ETIMEDOUT, -ENETUNREACH, ...).
 * fd stays the caller's on every path. A connect cut short (-ETIMEDOUT,
 * -ECANCELED) goes on in the kernel: calling weft_connect again waits for
 * it. A Unix connect waiting for room in a full backlog retries every 1 to
 * 50 ms; a weft_close of fd meanwhile ends it with -EBADF at its next try.
 * Suspends. */
WEFT_API int weft_connect(int fd, const weft_addr *a, int64_t deadline_ns);

/* A new stream socket connected to a: its descriptor, or a negative errno
 * (the socket is closed on every error path). Suspends. */
WEFT_API int weft_connect_addr(const weft_addr *a, int64_t deadline_ns);

/* Resolve host and connect with happy eyeballs (RFC 8305, simplified): the
 * addresses are tried in the resolver's order, IPv6 and IPv4 interleaved;
 * each next attempt starts when the previous one failed or after 250 ms;
 * the first to connect wins and the others are cancelled and closed.
 * Returns the connected descriptor (peer, if not NULL, gets its address),
 * or the error of the attempt that failed last in time (-ETIMEDOUT at the
 * deadline). The deadline bounds the attempts, not the name resolution
 * before them (getaddrinfo on the blocking pool, which the call waits for
 * even when cancelled: a resolver that hangs holds it). A cancellation
 * is never lost: the call returns -ECANCELED (closing a winner that
 * connected meanwhile), or, when the request came as it returned, the next
 * suspension does. Suspends. */
WEFT_API int weft_connect_host(const char *host, uint16_t port, int64_t deadline_ns, weft_addr *peer);

/* Happy eyeballs over the given addresses, in their order (1 to
 * WEFT_CONNECT_MAX_ADDRS of them), as weft_connect_host. Suspends.
 * Errors: as weft_connect_host; -EINVAL no address or too many. */
#define WEFT_CONNECT_MAX_ADDRS 16
WEFT_API int weft_connect_addrs(const weft_addr *addrs, size_t count, int64_t deadline_ns, weft_addr *peer);

/* socket + SO_REUSEADDR (not for Unix paths) + bind + listen(backlog; <= 0:
 * SOMAXCONN). flags: WEFT_LISTEN_REUSEPORT adds SO_REUSEPORT. Returns the
 * listening descriptor or a negative errno (-EADDRINUSE, ...). Does not
 * suspend. */
#define WEFT_LISTEN_REUSEPORT 1u
WEFT_API int weft_listen(const weft_addr *a, int backlog, unsigned flags);

/* accept4(2) with SOCK_CLOEXEC|SOCK_NONBLOCK: the new descriptor; the
 * peer's address in *peer when not NULL. Suspends. */
WEFT_API int weft_accept(int fd, weft_addr *peer);
WEFT_API int weft_accept_until(int fd, weft_addr *peer, int64_t deadline_ns);

/* recv(2)/send(2) (send adds MSG_NOSIGNAL): the bytes moved (recv: 0 at
 * end of stream), at most WEFT_IO_MAX. Suspends. */
WEFT_API ssize_t weft_recv(int fd, void *buf, size_t len, int flags);
WEFT_API ssize_t weft_send(int fd, const void *buf, size_t len, int flags);
WEFT_API ssize_t weft_recv_until(int fd, void *buf, size_t len, int flags, int64_t deadline_ns);
WEFT_API ssize_t weft_send_until(int fd, const void *buf, size_t len, int flags, int64_t deadline_ns);

/* Send all len bytes (looping over partial sends): len, or a negative
 * errno with *done (if not NULL) saying how many went. Suspends. */
WEFT_API ssize_t weft_send_all(int fd, const void *buf, size_t len, size_t *done);

/* recvmsg(2)/sendmsg(2) (recvmsg adds MSG_CMSG_CLOEXEC: descriptors received
 * with SCM_RIGHTS are close-on-exec; sendmsg adds MSG_NOSIGNAL). Suspends. */
WEFT_API ssize_t weft_recvmsg(int fd, struct msghdr *msg, int flags);
WEFT_API ssize_t weft_sendmsg(int fd, const struct msghdr *msg, int flags);

/* recvfrom(2)/sendto(2) for datagrams; from/to may be NULL (a connected
 * socket). A datagram longer than len is cut to len and the rest dropped
 * (the kernel's rule): flags MSG_TRUNC makes recvfrom return the
 * datagram's real length instead, so that a cut one can be told. Suspends. */
WEFT_API ssize_t weft_recvfrom(int fd, void *buf, size_t len, int flags, weft_addr *from);
WEFT_API ssize_t weft_sendto(int fd, const void *buf, size_t len, int flags, const weft_addr *to);

/* shutdown(2) (SHUT_RD, SHUT_WR, SHUT_RDWR). Does not suspend. */
WEFT_API int weft_shutdown(int fd, int how);

/* setsockopt(2)/getsockopt(2) and the common options. Do not suspend. */
WEFT_API int weft_setsockopt(int fd, int level, int name, const void *val, socklen_t len);
WEFT_API int weft_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
WEFT_API int weft_set_nodelay(int fd, bool on);
WEFT_API int weft_set_reuseaddr(int fd, bool on);
WEFT_API int weft_set_reuseport(int fd, bool on);

/* The local and the peer address of a socket. Do not suspend. */
WEFT_API int weft_sockname(int fd, weft_addr *out);
WEFT_API int weft_peername(int fd, weft_addr *out);

/* ------------------------------------------------------------ datagrams */

/* A UDP socket of a's family bound to a (port 0: any port): its
 * descriptor. Use weft_sendto/weft_recvfrom; weft_connect fixes a peer.
 * Does not suspend. Errors: -EINVAL; -EADDRINUSE; the kernel's. */
WEFT_API int weft_udp_bind(const weft_addr *a);

/* ------------------------------------------------------------ streams */

/* asyncio's StreamReader and StreamWriter over one connected socket, in
 * one object. One task may read while another writes; two tasks must not
 * read (or write) at once. Owned by its opener (or, for a server's
 * connection, by the server around the handler).
 *
 * Reading goes through a buffer (64 KiB to start); `limit` (default 64 KiB)
 * bounds what readuntil/readline may buffer looking for a separator.
 * Writing copies into a buffer; the bytes go to the kernel at once when it
 * takes them, else at the next drain (on io_uring a small write into an
 * empty buffer is a send submitted to the worker's ring and not waited
 * for: it leaves with the worker's next batch of I/O; buffered() counts
 * it until it completed, drain waits for it, and a send error it meets is
 * returned by the next write or drain). Back-pressure: a write that takes the
 * buffer past the high watermark (default 64 KiB) first sends until at most
 * the low watermark (default 16 KiB) is left, so a writer that never drains
 * keeps bounded memory; drain sends everything buffered. A stream may
 * speak TLS (weft/tls.h: weft_open_connection_tls, a server's opts.tls,
 * weft_stream_start_tls); every call here works the same on it. */
typedef struct weft_stream weft_stream;

/* Connect (weft_connect_host, or a Unix path) and wrap the socket. *out
 * receives the stream. Suspends. Errors: weft_connect_host's; -ENOMEM. */
WEFT_API int weft_open_connection(const char *host, uint16_t port, int64_t deadline_ns, weft_stream **out);
WEFT_API int weft_open_unix_connection(const char *path, int64_t deadline_ns, weft_stream **out);

/* Wrap a connected socket, or a pipe, FIFO or tty (the stream owns fd from
 * now on, also on error: -ENOMEM closes it). On a descriptor that is not a
 * socket the stream reads and writes with read/write, write_eof closes the
 * descriptor (no half-close on a pipe; later reads get -EBADF), and a write
 * to a pipe with no reader returns -EPIPE (a runtime ignores SIGPIPE when
 * the program left it at SIG_DFL: weft/core.h, weft_runtime_new). On a
 * datagram socket (SOCK_DGRAM, SOCK_SEQPACKET) the reader reads the
 * datagrams' bytes in order, each received whole (never cut to what is
 * left of a buffer), and an empty SOCK_DGRAM datagram is not end of
 * stream; writes keep no datagram boundaries. Does not suspend.
 * Errors: -ENOMEM; -EINVAL out NULL and -EBADF fd < 0 (fd is then left to
 * the caller). */
WEFT_API int weft_stream_from_fd(int fd, weft_stream **out);

/* The descriptor (for options); the stream still owns it. Bytes written
 * through the stream may still be on their way: drain before writing to
 * the descriptor directly. */
WEFT_API int weft_stream_fd(const weft_stream *s);

/* Set the reader's limit (> 0) and the writer's watermarks (low <= high).
 * Errors: -EINVAL. Do not suspend. */
WEFT_API int weft_stream_set_limit(weft_stream *s, size_t limit);
WEFT_API int weft_stream_set_watermarks(weft_stream *s, size_t high, size_t low);

/* A time limit (ns) for each receive the reader makes: a read that waits
 * longer for the peer returns -ETIMEDOUT (what arrived so far stays
 * buffered, except for readexactly's bytes already in buf: *got says how
 * many). -1 (the default): none. An idle timeout for a server's handler.
 * Errors: -EINVAL. Does not suspend. */
WEFT_API int weft_stream_set_timeout(weft_stream *s, int64_t timeout_ns);

/* read(n): up to n bytes, what is buffered or one receive; 0 at end of
 * stream. Suspends. */
WEFT_API ssize_t weft_stream_read(weft_stream *s, void *buf, size_t n);

/* read(-1): everything until end of stream into buf: the length, or
 * -ENOBUFS when more than cap bytes arrived (the first cap are in buf; the
 * rest stays readable). On any other error (a timeout, a cancellation, a
 * reset) the bytes it had received are buffered again: the next read gets
 * them (if no memory is left to hold them, the stream fails instead: every
 * later read returns -ENOMEM, never a gap in the bytes). Suspends. */
WEFT_API ssize_t weft_stream_read_all(weft_stream *s, void *buf, size_t cap);

/* readexactly(n): n bytes into buf, or -ENODATA when the stream ended
 * first (*got, if not NULL, receives the bytes that were read into buf,
 * also on success and other errors). Suspends. */
WEFT_API ssize_t weft_stream_readexactly(weft_stream *s, void *buf, size_t n, size_t *got);

/* readuntil(sep): the bytes up to and including sep (seplen >= 1) into
 * buf: their length. -ENOBUFS when no separator starts within the first
 * `limit` bytes (asyncio's rule: with limit 10, "1234567890\n" is
 * returned whole) or the line would not fit in cap: nothing is consumed. -ENODATA when the
 * stream ended before a separator: what was buffered is consumed into buf
 * (up to cap) and *got says how much. Suspends. */
WEFT_API ssize_t weft_stream_readuntil(weft_stream *s, const void *sep, size_t seplen, void *buf, size_t cap,
                                       size_t *got);

/* readline: readuntil("\n"), except that at end of stream the partial
 * last line is returned (0 at end of stream). -ENOBUFS as readuntil, also
 * for a last line longer than cap (nothing consumed: never a silently cut
 * line). Suspends. */
WEFT_API ssize_t weft_stream_readline(weft_stream *s, void *buf, size_t cap);

/* True once the peer's end of stream was seen and the buffer is empty. */
WEFT_API bool weft_stream_at_eof(const weft_stream *s);

/* Buffer len bytes (iovcnt buffers) for sending: 0 or a negative errno
 * (-EPIPE after write_eof/close, -ECONNRESET after abort, a send error
 * seen before, -ENOMEM).
 * -ENOMEM: nothing of this call was sent or kept (a retry sends it once),
 * unless part of it had gone to the kernel already: then the stream has
 * failed, and later writes return -ENOMEM too. At most IOV_MAX buffers,
 * whose lengths add up to at most SSIZE_MAX (-EINVAL). Suspends only for
 * back-pressure (see above); a cancellation there returns -ECANCELED with
 * this call's bytes buffered all the same (drain or wait_closed sends them:
 * a retry would send them twice). */
WEFT_API int weft_stream_write(weft_stream *s, const void *buf, size_t len);
WEFT_API int weft_stream_writev(weft_stream *s, const struct iovec *iov, int iovcnt);

/* Send what is buffered; returns when the kernel took all of it (a reader
 * that does not read holds the drainer: back-pressure). Suspends.
 * Errors: -EPIPE, -ECONNRESET (also when the stream's reader met the
 * peer's reset, as asyncio's drain raises ConnectionResetError; and after
 * abort, also another task's made while drain waits), ... */
WEFT_API int weft_stream_drain(weft_stream *s);

/* Buffered bytes not yet sent. */
WEFT_API size_t weft_stream_buffered(const weft_stream *s);

/* Drain, then shutdown(SHUT_WR): the peer reads end of stream. Suspends. */
WEFT_API int weft_stream_write_eof(weft_stream *s);

/* close(): no more writes (they get -EPIPE), and no more reading from the
 * peer: reads return what is buffered, then end of stream (asyncio's
 * transport stops reading at close). Does not suspend.
 * wait_closed(): send what is buffered (giving up on an error or after
 * 10 s), close the socket and free the stream; call it once, after close
 * or alone. Returns 0 or the error that ended the flush (0 after abort:
 * nothing is flushed, as asyncio's wait_closed after abort). Suspends, but
 * is not cut short by cancellation beyond the flush. close and wait_closed
 * are writer-side calls: the writing task's, or another task's while no
 * write, drain or write_eof runs (two tasks must not write at once),
 * except wait_closed after abort (see abort). close does not wake a
 * writer waiting for the peer (asyncio's close lets the flush go on too):
 * to drop a slow peer, abort.
 *
 * Closing under a reader. close, abort and wait_closed may be called while
 * another task is in a read call on the stream (read, read_all, readexactly,
 * readuntil, readline), on any worker, waiting for the peer: that call
 * returns end of stream, as asyncio's reader does when the transport closes:
 * read 0, read_all what it had, readexactly and readuntil -ENODATA with *got
 * the bytes already in buf (asyncio's IncompleteReadError), readline the
 * partial last line (0 if none). Not an error code: the reader cannot tell
 * this end from the peer's, and needs not to: either way no more bytes will
 * come. A read cancelled meanwhile keeps its -ECANCELED; bytes received are
 * never dropped (a time limit that expires meanwhile reads as end of stream
 * too). wait_closed returns only after that call has returned. Then the
 * stream is freed: the reader must make no call after the one that returned
 * end of stream (a call that begins after wait_closed returned uses freed
 * memory). wait_closed cannot know of a reader between two calls; when the
 * reader may be anywhere (running, or not started yet), call close() first
 * (the reader's next read returns end of stream), join the reader task, then
 * wait_closed.
 *
 * How the reader is woken: a stream socket is shut for reading (the peer of
 * a Unix socket pair then gets -EPIPE for its writes); a pipe, tty or
 * datagram socket gets its descriptor number replaced by an empty pipe's,
 * and a receive in flight on io_uring is cancelled by file (kernel 5.19 or
 * later); while bytes wait to be flushed there, the wake waits for
 * wait_closed's flush. Out of descriptors (or on an older kernel) such a
 * reader is woken only by its next data or end of file. A TLS reader is
 * woken without ending the session: wait_closed still sends close_notify. */
WEFT_API void weft_stream_close(weft_stream *s);
WEFT_API int weft_stream_wait_closed(weft_stream *s);

/* abort(): close abortively, as asyncio's transport.abort(): the
 * connection ends now (below: how), and wait_closed (still to be called
 * once, or by the server after the handler) drops what is buffered, sends
 * no TLS close_notify, and closes with SO_LINGER 0, so the peer sees a
 * reset. A reader waiting in the stream returns end of stream, as after
 * close(). Every writer call from then on (write, writev, drain,
 * write_eof) returns -ECONNRESET and sends nothing, as asyncio's drain
 * raises ConnectionResetError after abort. Does not suspend.
 *
 * Aborting under a writer. Unlike close and wait_closed, abort may be
 * called by any task, on any worker, whatever the other tasks do with the
 * stream: while a task is in a writer call, in a reader call, or neither.
 * A write, writev, drain or write_eof waiting for the peer to read
 * (back-pressure, a full pipe) returns -ECONNRESET at once (a cancellation
 * that came first keeps its -ECANCELED); its bytes still buffered are
 * dropped. A writer call running at the same moment without waiting may
 * still have handed bytes to the kernel, as with any two concurrent calls,
 * and returns -ECONNRESET too; nothing leaves after the connection ended.
 * Then wait_closed may be called (by the aborting task, or the server
 * after the handler) while that writer call is still in the stream: it
 * returns only after the call has returned, and after every abort call
 * running has returned; the writer must make no call after the one that
 * returned -ECONNRESET (it would use freed memory), as a reader after end
 * of stream. wait_closed cannot know of a writer between two calls, or
 * one that will call again after an -ECANCELED: unless the writer stops
 * at its first error and is inside a call, join it first. An abort must
 * not begin once wait_closed may have freed the stream: a task that
 * aborts another's stream must be done with it before wait_closed begins
 * (joined, or told), for instance a watchdog that the handler cancels and
 * joins before it returns. In short, with the writer's calls: abort may
 * run beside any of them (and beside another abort); wait_closed beside
 * one only after an abort it comes after (the same task's, or one whose
 * task told it); close, and two writer calls, never.
 *
 * How the writer is woken (and the connection ended): a stream socket is
 * reset (TCP: connect(AF_UNSPEC), which sends the reset and drops the
 * kernel's queues at once) and shut both ways, so every send fails and a
 * wait for room ends (an epoll event, an io_uring poll, a ring send in
 * flight); a Unix socket's peer reads what it had, then end of stream.
 * A pipe or tty written by a task in a writer call gets its descriptor
 * number replaced by an empty pipe's read end (every later write fails;
 * a child reading the other end sees end of file once no operation holds
 * the old file), the epoll readiness waiters are woken and an io_uring
 * write in flight is cancelled by file (kernel 5.19 or later); out of
 * descriptors, such a writer on io_uring is woken only when the reader
 * reads or goes. A TLS stream's writer is woken as its socket's: the
 * session dies, no close_notify is sent. */
WEFT_API void weft_stream_abort(weft_stream *s);

/* The peer's and the local address. Do not suspend. */
WEFT_API int weft_stream_peer(const weft_stream *s, weft_addr *out);
WEFT_API int weft_stream_local(const weft_stream *s, weft_addr *out);

/* ------------------------------------------------------------ servers */

/* A connection handler: runs as its own task per accepted connection. The
 * server owns the stream: after the handler returns it is flushed, closed
 * and freed (the handler must not close it); a task the handler left
 * waiting in a read of it returns end of stream first (see wait_closed). */
typedef int (*weft_conn_fn)(weft_stream *s, void *arg);

/* Where a server starts its handler tasks (weft_server_opts.placement). */
enum weft_placement {
  WEFT_PLACE_ROUND_ROBIN = 0, /* connection i on worker i mod N (then free to be stolen) */
  WEFT_PLACE_LOCAL = 1,       /* on the accept loop's worker; idle workers steal */
};

typedef struct weft_server_opts {
  int backlog;          /* listen backlog; 0 = SOMAXCONN */
  bool reuseport;       /* SO_REUSEPORT on the listener */
  size_t limit;         /* each stream's reader limit; 0 = 64 KiB; at most SSIZE_MAX / 2 */
  size_t stack_size;    /* handler task stack; 0 = the runtime's default; else 16 KiB to 1 GiB */
  int placement;        /* enum weft_placement */
  struct weft_tls_ctx *tls; /* a server context (weft/tls.h): each connection runs the TLS handshake
                               in its handler task first (within the context's handshake timeout);
                               when it fails the connection is reset and the handler is not called.
                               NULL: plain. */
} weft_server_opts;

typedef struct weft_server weft_server;

/* asyncio.start_server: listen on host:port (host NULL or "": all IPv4 and
 * IPv6 addresses, as one dual-stack IPv6 socket where the system has
 * IPv6; a name is resolved, the first address used; port 0: the kernel
 * picks, see weft_server_addr) or on a Unix path (a socket file
 * already there, left by a server that died, is removed first, as asyncio
 * does; close removes the path), and serve each
 * accepted connection with fn(stream, arg) in a new task, placed on the
 * workers round-robin (opts.placement). opts may be NULL. Suspends (name resolution). Errors:
 * -EINVAL (out or fn NULL, outside a task, a bad option: an unknown
 * placement, a stack_size or limit out of its range, a client TLS
 * context); -EADDRINUSE; the resolver's; -ENOMEM. */
WEFT_API int weft_start_server(weft_server **out, const char *host, uint16_t port, weft_conn_fn fn, void *arg,
                               const weft_server_opts *opts);
WEFT_API int weft_start_unix_server(weft_server **out, const char *path, weft_conn_fn fn, void *arg,
                                    const weft_server_opts *opts);

/* The address the server listens on. Does not suspend. */
WEFT_API int weft_server_addr(const weft_server *srv, weft_addr *out);

/* Handlers running now; connections accepted so far. */
WEFT_API size_t weft_server_active(weft_server *srv);
WEFT_API uint64_t weft_server_accepted(weft_server *srv);

/* Stop accepting and close the listening socket; running handlers go on.
 * Idempotent. Suspends (waits for the accept loop to stop). */
WEFT_API int weft_server_close(weft_server *srv);

/* Wait until the server is closed and every handler has returned.
 * Suspends. Errors: -ECANCELED; -EINVAL srv NULL, outside a task. */
WEFT_API int weft_server_wait_closed(weft_server *srv);

/* Graceful shutdown: close, let the handlers finish until the deadline,
 * then cancel those still running and wait for them (a connection whose
 * handler returns after the cancellation began is reset if bytes are still
 * unsent, rather than flushed for up to wait_closed's 10 s). Returns the number of
 * handlers that were cancelled. Suspends (not cut short by cancellation
 * once the handlers are being cancelled). Not from one of the server's own
 * handlers (it would wait for itself), nor wait_closed. Errors: -EINVAL srv
 * NULL, outside a task (nothing changes); -ENOMEM no memory to list the
 * handlers (none is cancelled: it waits for them to return). */
WEFT_API int weft_server_shutdown(weft_server *srv, int64_t deadline_ns);

/* Shut down (deadline now) if needed, and free. Suspends. Outside a task
 * it does nothing (the shutdown is refused: debug mode reports it); call it
 * again from a task. */
WEFT_API void weft_server_free(weft_server *srv);

#ifdef __cplusplus
}
#endif

#endif
