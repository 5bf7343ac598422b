/* net/tls.c: TLS contexts and the TLS layer under a stream (OpenSSL 3).
 *
 * THE TRANSPORT. OpenSSL drives the socket itself through a small BIO of
 * ours: recv(MSG_DONTWAIT) and send(MSG_DONTWAIT|MSG_NOSIGNAL) (OpenSSL's
 * own socket BIO would write(2) and raise SIGPIPE), EAGAIN reported as
 * "retry". Every SSL call is non-blocking; on SSL_ERROR_WANT_READ/WRITE the
 * calling task waits with weft_poll (IORING_OP_POLL_ADD on io_uring, the
 * one-shot epoll registration on epoll) and calls again. Why not memory
 * BIOs fed by weft_recv/weft_send (the ring's RECV/SEND): a cancelled wait
 * here moves no bytes (the poll is the only cancellation point), so no
 * cancellation can leave ciphertext half in the kernel and half in a BIO,
 * and there is no second buffer to size; the price is a poll before a
 * receive that would block, where a ring RECV would have been one
 * operation. OpenSSL reads ahead (one recv(2) per batch of records, not
 * two per record), and a read after one that found the socket empty
 * (`drained`: EAGAIN, or a short read) waits for POLLIN before it tries,
 * unless OpenSSL still holds bytes (SSL_has_pending): the try would fail
 * with EAGAIN. https_hello under wrk: 4.1-4.3 system calls per request
 * before both, 2.3-2.6 after (docs/io-choices.md).
 *
 * ONE READER AND ONE WRITER AT ONCE. A stream lets one task read while
 * another writes, but an SSL object is not safe for two threads at once:
 * each SSL call runs under `lock` (a weft_lock: a call may allocate and
 * make system calls, so not a spinlock), released before any wait, so a
 * reader waiting for POLLIN never holds up the writer. OpenSSL's error
 * queue is per thread: each call clears it first and reads it before the
 * lock is released, with no suspension in between (same thread).
 *
 * ERRORS (the codes are documented in weft/tls.h): during the handshake a
 * verification failure on our side (SSL_get_verify_result != X509_V_OK) is
 * -EKEYREJECTED, anything else from OpenSSL -ECONNABORTED; after it, a
 * peer that closed without close_notify is -ECONNRESET (OpenSSL 3's
 * SSL_R_UNEXPECTED_EOF_WHILE_READING), other protocol errors -EPROTO,
 * system call errors their errno. Once a fatal error happened the SSL
 * object may not be used again: `dead` latches it, and the stream reports
 * -EPIPE for later writes and skips close_notify at close.
 *
 * STOPPING (weft__tls_stop): a stream closed while its reader waits here
 * shuts the socket for reading to wake it (net/stream.c). The end of
 * stream the reader then meets is not the peer's: taken for a truncation
 * it would kill the session, and the close_notify that wait_closed sends
 * after its flush could not be sent. So once `stopping` is set, the BIO
 * reports a receive of 0 as "retry" (SSL_read: WANT_READ, the session
 * intact) and a read that would wait returns 0 instead. The closer stores
 * the flag before its shutdown(2) and the reader loads it after its recv
 * saw the shutdown's effect: that order is carried by the kernel (the flag
 * is release/acquire all the same); a reader that missed it sees a
 * truncation: the session dies and close_notify is skipped, nothing worse.
 *
 * CONTEXTS wrap an SSL_CTX (reference-counted by OpenSSL, so each SSL holds
 * it); the ALPN list lives in the wrapper, which must outlive its streams.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <weft/io.h>
#include <weft/sync.h>
#include <weft/tls.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/runtime.h"
#include "io/op.h"
#include "net/net.h"

#define DEFAULT_HANDSHAKE_NS (60LL * 1000 * 1000 * 1000)

struct weft_tls_ctx {
  SSL_CTX *ssl_ctx;
  bool server;
  int64_t handshake_timeout_ns;
  unsigned char alpn[256]; /* wire format: length-prefixed names */
  size_t alpn_len;
};

struct weft__tls {
  SSL *ssl;
  int fd;
  bool drained;      /* the BIO's last receive found the socket empty (EAGAIN, or fewer bytes than asked) */
  weft_lock lock;    /* around every SSL call (see ONE READER AND ONE WRITER) */
  bool dead;         /* a fatal error happened: no more SSL calls but SSL_free */
  bool handshaken;
  char reason[160];  /* why it died (OpenSSL's words), under `lock`; written once, when dead is set */
  _Atomic bool stopping; /* weft__tls_stop was called (STOPPING) */
};

/* ------------------------------------------------------------ debug reports */

static int print_err(const char *str, size_t len, void *u) {
  fprintf(stderr, "weft: tls: %s: %.*s", (const char *)u, (int)len, str);
  if (len && str[len - 1] != '\n') fputc('\n', stderr);
  return 1;
}

/* Keep the reason of a fatal error in reason[cap] (when not NULL): the
 * verification error when the peer's certificate was rejected, else
 * OpenSSL's first queued error, else the system error. Then print
 * (debug mode) and clear this thread's OpenSSL errors. */
static void report(const char *what, SSL *ssl, char *reason, size_t cap, int sys) {
  if (reason) {
    long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    unsigned long e = ERR_peek_error();
    if (v != X509_V_OK) snprintf(reason, cap, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    else if (e) ERR_error_string_n(e, reason, cap);
    else if (sys) snprintf(reason, cap, "%s", strerror(sys));
    else snprintf(reason, cap, "the peer closed the connection");
  }
  if (weft__debug_on()) {
    if (ssl) {
      long v = SSL_get_verify_result(ssl);
      if (v != X509_V_OK)
        fprintf(stderr, "weft: tls: %s: certificate verification: %s\n", what, X509_verify_cert_error_string(v));
    }
    ERR_print_errors_cb(print_err, (void *)what);
  }
  ERR_clear_error();
}

/* ------------------------------------------------------------ the BIO */

static int bio_write(BIO *b, const char *buf, int len) {
  int fd = ((struct weft__tls *)BIO_get_data(b))->fd;
  BIO_clear_retry_flags(b);
  ssize_t n;
  do n = send(fd, buf, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_write(b);
  return (int)n;
}

static int bio_read(BIO *b, char *buf, int len) {
  struct weft__tls *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  ssize_t n;
  do n = recv(t->fd, buf, (size_t)len, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  bool again = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  /* acquire: pairs with weft__tls_stop's release (STOPPING: the order that
   * matters is the kernel's, between its shutdown and this recv) */
  if (n == 0 && weft__load(&t->stopping, ACQUIRE)) { /* our own shutdown, not the peer's end */
    again = true;
    n = -1;
  }
  if (again) BIO_set_retry_read(b);
  t->drained = again || (n > 0 && n < len); /* (a stream socket: a short read took all there was) */
  return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static void bio_method_init(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "weft socket");
  if (!m) return;
  BIO_meth_set_write(m, bio_write);
  BIO_meth_set_read(m, bio_read);
  BIO_meth_set_ctrl(m, bio_ctrl);
  BIO_meth_set_create(m, bio_create);
  bio_method = m; /* published by pthread_once */
}

/* ------------------------------------------------------------ contexts */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned inlen, void *arg) {
  weft_tls_ctx *c = arg;
  unsigned char *sel;
  if (SSL_select_next_proto(&sel, outlen, c->alpn, (unsigned)c->alpn_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static int parse_alpn(weft_tls_ctx *c, const char *list) {
  size_t n = 0;
  const char *p = list;
  while (*p) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == 0 || len > 255 || n + 1 + len > sizeof c->alpn) return -EINVAL;
    c->alpn[n++] = (unsigned char)len;
    memcpy(c->alpn + n, p, len);
    n += len;
    p += len;
    if (*p == ',') {
      p++;
      if (!*p) return -EINVAL;
    }
  }
  if (!n) return -EINVAL;
  c->alpn_len = n;
  return 0;
}

static int readable(const char *path) { return access(path, R_OK) ? -errno : 0; }

static int configure(weft_tls_ctx *c, const weft_tls_opts *o) {
  SSL_CTX *x = c->ssl_ctx;
  if (!SSL_CTX_set_min_proto_version(x, TLS1_2_VERSION)) return -EINVAL;
  SSL_CTX_set_options(x, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(x, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  /* read ahead: one recv(2) takes a record's header and body (and whatever
   * follows, up to OpenSSL's 16 KiB buffer) instead of one recv for each:
   * https_hello went from 4.3 to 3.3 system calls per request. Safe with our
   * waits: SSL_read serves buffered records before it reads, and says
   * WANT_READ only after a recv found the socket empty. (Not
   * SSL_MODE_RELEASE_BUFFERS: it would free and allocate the buffers at
   * every record; a connection keeps its ~34 KiB.) */
  SSL_CTX_set_read_ahead(x, 1);
  int rc;
  if (c->server && !o->cert_file) return -EINVAL;
  if (o->cert_file) {
    const char *key = o->key_file ? o->key_file : o->cert_file;
    if ((rc = readable(o->cert_file)) || (rc = readable(key))) return rc;
    if (SSL_CTX_use_certificate_chain_file(x, o->cert_file) != 1) return -EINVAL;
    if (SSL_CTX_use_PrivateKey_file(x, key, SSL_FILETYPE_PEM) != 1) return -EINVAL;
    if (SSL_CTX_check_private_key(x) != 1) return -EINVAL;
  }
  bool verify = o->verify == WEFT_TLS_VERIFY_PEER || (!c->server && o->verify == WEFT_TLS_VERIFY_DEFAULT);
  if (o->ca_file) {
    if ((rc = readable(o->ca_file))) return rc;
    if (SSL_CTX_load_verify_locations(x, o->ca_file, NULL) != 1) return -EINVAL;
  } else if (verify && SSL_CTX_set_default_verify_paths(x) != 1) {
    return -EINVAL;
  }
  if (verify) SSL_CTX_set_verify(x, SSL_VERIFY_PEER | (c->server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
  else SSL_CTX_set_verify(x, SSL_VERIFY_NONE, NULL);
  if (o->alpn) {
    if ((rc = parse_alpn(c, o->alpn))) return rc;
    if (c->server) SSL_CTX_set_alpn_select_cb(x, alpn_select, c);
    else if (SSL_CTX_set_alpn_protos(x, c->alpn, (unsigned)c->alpn_len) != 0) return -ENOMEM;
  }
  return 0;
}

/* Fill the extension cache of every certificate the context shares between
 * connections: its own chain and the trust store loaded from ca_file.
 * OpenSSL computes an X509's cache (key ids, flags, the SHA-1 hash) on its
 * first use, and two first uses at once race inside OpenSSL 3.0: both see
 * an empty cache, both write it (under the certificate's lock, the second
 * overwriting what the first is reading), and the fast path that skips the
 * lock is invisible to ThreadSanitizer (openssl/openssl issues 25202 and
 * 32609). ThreadSanitizer caught it here: two client handshakes on two
 * workers checking the server's certificate against one CA, a memcmp of
 * the CA's key id against the memcpy writing it. Done once, here, before
 * the context is handed to any task, the caches are only read afterwards.
 * (Certificates that OpenSSL loads later, from a hashed directory of the
 * default verify paths, cannot be reached from here.) */
static void fill_certificate_caches(SSL_CTX *x) {
  X509 *own = SSL_CTX_get0_certificate(x);
  if (own) (void)X509_check_purpose(own, -1, 0); /* -1: only fill the cache */
  STACK_OF(X509) *chain = NULL;
  if (SSL_CTX_get0_chain_certs(x, &chain) == 1)
    for (int i = 0; i < sk_X509_num(chain); i++) (void)X509_check_purpose(sk_X509_value(chain, i), -1, 0);
  X509_STORE *store = SSL_CTX_get_cert_store(x);
  STACK_OF(X509_OBJECT) *objs = store ? X509_STORE_get0_objects(store) : NULL;
  for (int i = 0; objs && i < sk_X509_OBJECT_num(objs); i++) {
    X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
    if (ca) (void)X509_check_purpose(ca, -1, 0);
  }
  ERR_clear_error(); /* an invalid certificate is the handshake's to report */
}

int weft_tls_ctx_new(weft_tls_ctx **out, bool server, const weft_tls_opts *opts) {
  if (!out) return -EINVAL;
  *out = NULL;
  weft_tls_opts o = opts ? *opts : (weft_tls_opts){0};
  if (o.verify < WEFT_TLS_VERIFY_DEFAULT || o.verify > WEFT_TLS_VERIFY_NONE || o.handshake_timeout_ns < 0)
    return -EINVAL;
  pthread_once(&bio_once, bio_method_init);
  if (!bio_method) return -ENOMEM;
  weft_tls_ctx *c = weft__alloc(sizeof *c);
  if (!c) return -ENOMEM;
  memset(c, 0, sizeof *c);
  c->server = server;
  c->handshake_timeout_ns = o.handshake_timeout_ns ? o.handshake_timeout_ns : DEFAULT_HANDSHAKE_NS;
  ERR_clear_error();
  c->ssl_ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  int rc = c->ssl_ctx ? configure(c, &o) : -ENOMEM;
  if (!rc) fill_certificate_caches(c->ssl_ctx);
  if (rc) {
    report("context", NULL, NULL, 0, 0);
    weft_tls_ctx_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

void weft_tls_ctx_free(weft_tls_ctx *c) {
  if (!c) return;
  SSL_CTX_free(c->ssl_ctx);
  weft__free(c, sizeof *c);
}

bool weft__tls_ctx_is_server(const weft_tls_ctx *c) { return c->server; }

/* ------------------------------------------------------------ connections */

static bool is_ip(const char *name) {
  unsigned char b[16];
  return inet_pton(AF_INET, name, b) == 1 || inet_pton(AF_INET6, name, b) == 1;
}

int weft__tls_new(struct weft__tls **out, int fd, weft_tls_ctx *c, bool server, const char *server_name) {
  if (!c || c->server != server) return -EINVAL;
  bool verify = SSL_CTX_get_verify_mode(c->ssl_ctx) & SSL_VERIFY_PEER;
  if (!server && verify && !server_name) return -EINVAL;
  struct weft__tls *t = weft__alloc(sizeof *t);
  if (!t) return -ENOMEM;
  memset(t, 0, sizeof *t);
  weft_lock_init(&t->lock);
  ERR_clear_error();
  t->ssl = SSL_new(c->ssl_ctx);
  BIO *bio = t->ssl ? BIO_new(bio_method) : NULL;
  int rc = bio ? 0 : -ENOMEM;
  if (bio) {
    t->fd = fd;
    BIO_set_data(bio, t);
    SSL_set_bio(t->ssl, bio, bio); /* the SSL owns the BIO now */
    if (server) {
      SSL_set_accept_state(t->ssl);
    } else {
      SSL_set_connect_state(t->ssl);
      if (server_name && !is_ip(server_name) && SSL_set_tlsext_host_name(t->ssl, server_name) != 1) rc = -EINVAL;
      if (!rc && server_name && verify) {
        X509_VERIFY_PARAM *p = SSL_get0_param(t->ssl);
        int ok = is_ip(server_name) ? X509_VERIFY_PARAM_set1_ip_asc(p, server_name)
                                    : X509_VERIFY_PARAM_set1_host(p, server_name, 0);
        if (ok != 1) rc = -EINVAL;
      }
    }
  }
  if (rc) {
    report("connection", NULL, NULL, 0, 0);
    weft__tls_free(t);
    return rc;
  }
  *out = t;
  return 0;
}

void weft__tls_free(struct weft__tls *t) {
  if (!t) return;
  SSL_free(t->ssl);
  weft_lock_destroy(&t->lock);
  weft__free(t, sizeof *t);
}

enum {
  OP_HANDSHAKE = WEFT__TLS_HANDSHAKE,
  OP_READ = WEFT__TLS_READ,
  OP_WRITE = WEFT__TLS_WRITE,
  OP_SHUTDOWN = WEFT__TLS_SHUTDOWN
};

/* One non-blocking SSL call under the lock: > 0 or 0 done (bytes for read
 * and write; a read's 0 is the peer's close_notify, a write of n >= 1
 * never returns 0), WANT_READ/WANT_WRITE as -EAGAIN with *want the poll
 * bits, else the mapped error. */
static ssize_t call_once(struct weft__tls *t, int op, void *buf, size_t n, unsigned *want, bool may_skip) {
  int rc = weft_lock_acquire(&t->lock);
  if (rc) return rc;
  if (may_skip && op == OP_READ && t->drained && !t->dead && !SSL_has_pending(t->ssl)) {
    /* the socket was empty at the last receive and OpenSSL holds no byte:
     * SSL_read would only make a recv(2) that fails with EAGAIN; wait first
     * (as net/socket.c's weft__recv_drained does for plain streams) */
    weft_lock_release(&t->lock);
    *want = POLLIN;
    return -EAGAIN;
  }
  if (t->dead || (op == OP_SHUTDOWN && !t->handshaken)) { /* (read under the lock: the reader may set dead) */
    weft_lock_release(&t->lock);
    return op == OP_SHUTDOWN ? 0 : -EPIPE; /* no close_notify on a dead or unfinished session */
  }
  ERR_clear_error();
  errno = 0; /* SSL_ERROR_SYSCALL reads it: no stale value */
  size_t done = 0;
  int ok;
  switch (op) {
  case OP_HANDSHAKE: ok = SSL_do_handshake(t->ssl); break;
  case OP_READ: ok = SSL_read_ex(t->ssl, buf, n, &done); break;
  case OP_WRITE: ok = SSL_write_ex(t->ssl, buf, n, &done); break;
  default: ok = SSL_shutdown(t->ssl); /* 0: sent, the peer's not seen yet: enough */
    if (ok == 0) ok = 1;
    break;
  }
  ssize_t res;
  if (ok == 1) {
    res = (ssize_t)done;
    if (op == OP_HANDSHAKE) t->handshaken = true;
  } else {
    int e = SSL_get_error(t->ssl, ok);
    int sys = errno;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      *want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
      res = -EAGAIN;
    } else if (e == SSL_ERROR_ZERO_RETURN && op != OP_WRITE) {
      res = 0; /* close_notify: end of stream */
    } else if (op == OP_HANDSHAKE) {
      bool verifying = SSL_get_verify_mode(t->ssl) & SSL_VERIFY_PEER;
      bool rejected = verifying && SSL_get_verify_result(t->ssl) != X509_V_OK;
      res = rejected ? -EKEYREJECTED : -ECONNABORTED;
      report("handshake", rejected ? t->ssl : NULL, t->reason, sizeof t->reason, sys);
      t->dead = true;
    } else if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) {
      /* ZERO_RETURN on a write: SSL_get_error's answer to any failure once
       * the peer's close_notify came (a write may follow it: half-close),
       * here the send's; not "0 bytes written", which every writer (the
       * transport's flush, a stream's) would retry at once, forever */
      res = sys && sys != EAGAIN ? -sys : -ECONNRESET;
      report("i/o", NULL, t->reason, sizeof t->reason, sys);
      t->dead = true;
    } else {
      unsigned long err = ERR_peek_error();
      res = ERR_GET_LIB(err) == ERR_LIB_SSL && ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING ? -ECONNRESET
                                                                                                       : -EPROTO;
      report("i/o", NULL, t->reason, sizeof t->reason, 0);
      t->dead = true;
    }
  }
  weft_lock_release(&t->lock);
  return res;
}

/* Run op until it completes, waiting for readiness in between, until the
 * deadline; deadline 0: never wait (-EAGAIN when it would block). */
static ssize_t run(struct weft__tls *t, int fd, int op, void *buf, size_t n, int64_t deadline) {
  bool may_skip = deadline != 0; /* (never for a caller that will not wait) */
  for (;;) {
    unsigned want = 0;
    ssize_t r = call_once(t, op, buf, n, &want, may_skip);
    if (r != -EAGAIN) return r;
    if (deadline == 0) return -EAGAIN;
    /* relaxed: a stop that this load misses ends the poll below (the
     * socket is shut for reading) and is seen on the next turn */
    if (op == OP_READ && weft__load(&t->stopping, RELAXED)) return 0;
    int p = weft_poll(fd, want, deadline);
    if (p < 0) return p;
    may_skip = false; /* readiness seen: try the socket */
  }
}

void weft__tls_stop(struct weft__tls *t) {
  weft__store(&t->stopping, true, RELEASE); /* release: pairs with bio_read's acquire (STOPPING) */
}

ssize_t weft__tls_step(struct weft__tls *t, int op, void *buf, size_t n, unsigned *want) {
  if (n > INT32_MAX) n = INT32_MAX;
  *want = 0;
  return call_once(t, op, buf, n, want, op == OP_READ);
}

void weft__tls_readable(struct weft__tls *t) { t->drained = false; }

const char *weft__tls_reason(const struct weft__tls *t) { return t->dead ? t->reason : ""; }

const char *weft__tls_cipher(const struct weft__tls *t) {
  const SSL_CIPHER *c = t->handshaken ? SSL_get_current_cipher(t->ssl) : NULL;
  return c ? SSL_CIPHER_get_name(c) : NULL; /* a static string of OpenSSL's cipher table */
}

int weft__tls_peer_der(const struct weft__tls *t, unsigned char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  X509 *x = t->handshaken ? SSL_get1_peer_certificate(t->ssl) : NULL;
  if (!x) return 0;
  int n = i2d_X509(x, NULL);
  int rc = n > 0 ? 0 : -EPROTO;
  unsigned char *p = n > 0 ? weft__alloc((size_t)n) : NULL;
  if (n > 0 && !p) rc = -ENOMEM;
  if (p) {
    unsigned char *w = p; /* i2d_X509 moves the pointer it is given */
    i2d_X509(x, &w);
    *out = p;
    *len = (size_t)n;
  }
  X509_free(x);
  ERR_clear_error();
  return rc;
}

int weft__tls_handshake(struct weft__tls *t, int fd, const weft_tls_ctx *c, int64_t deadline) {
  int64_t hs = weft__deadline_after(c->handshake_timeout_ns);
  if (deadline < hs) hs = deadline;
  if (hs == 0) hs = 1; /* a caller's 0 is a deadline in the past (-ETIMEDOUT), not run's "never wait" (-EAGAIN) */
  ssize_t r = run(t, fd, OP_HANDSHAKE, NULL, 0, hs);
  if (r == 0 && !t->handshaken) { /* close_notify during the handshake: a failure like any other */
    t->dead = true;
    snprintf(t->reason, sizeof t->reason, "the peer closed the connection during the handshake");
    return -ECONNABORTED;
  }
  if (r < 0 && !t->dead) { /* a timeout or cancellation leaves the handshake half done (no other task
                             uses the stream before its handshake ends) */
    t->dead = true;
    snprintf(t->reason, sizeof t->reason, "handshake %s", r == -ETIMEDOUT ? "timed out" : "interrupted");
  }
  return r < 0 ? (int)r : 0;
}

ssize_t weft__tls_recv(struct weft__tls *t, int fd, void *buf, size_t n, int64_t deadline) {
  if (n > INT32_MAX) n = INT32_MAX;
  return run(t, fd, OP_READ, buf, n, deadline);
}

ssize_t weft__tls_send(struct weft__tls *t, int fd, const void *buf, size_t n, int64_t deadline) {
  if (n > INT32_MAX) n = INT32_MAX;
  return run(t, fd, OP_WRITE, (void *)buf, n, deadline);
}

int weft__tls_close_notify(struct weft__tls *t, int fd, int64_t deadline) {
  ssize_t r = run(t, fd, OP_SHUTDOWN, NULL, 0, deadline);
  return r < 0 ? (int)r : 0;
}

static int copy_out(const unsigned char *p, size_t len, char *buf, size_t cap) {
  if (!buf && cap) return -EINVAL;
  if (len + 1 > cap) return -ENOSPC;
  if (len) memcpy(buf, p, len); /* p may be NULL when len is 0 */
  buf[len] = 0;
  return (int)len;
}

int weft__tls_alpn(const struct weft__tls *t, char *buf, size_t cap) {
  const unsigned char *p = NULL;
  unsigned len = 0;
  SSL_get0_alpn_selected(t->ssl, &p, &len);
  return copy_out(p, p ? len : 0, buf, cap);
}

int weft__tls_server_name(const struct weft__tls *t, char *buf, size_t cap) {
  const char *name = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
  return copy_out((const unsigned char *)name, name ? strlen(name) : 0, buf, cap);
}

const char *weft__tls_version(const struct weft__tls *t) { return t->handshaken ? SSL_get_version(t->ssl) : NULL; }

int weft__tls_error(struct weft__tls *t, char *buf, size_t cap) {
  int rc = weft_lock_acquire(&t->lock);
  if (rc) return rc;
  rc = copy_out((const unsigned char *)t->reason, t->dead ? strlen(t->reason) : 0, buf, cap);
  weft_lock_release(&t->lock);
  return rc;
}

/* ------------------------------------------------------------ streams */

static int start_tls(weft_stream *s, weft_tls_ctx *ctx, bool server_side, const char *server_name,
                     int64_t deadline) {
  if (!s || !ctx) return -EINVAL;
  int fd = weft_stream_fd(s);
  struct weft__tls *t;
  int rc = weft__tls_new(&t, fd, ctx, server_side, server_name);
  if (rc) return rc;
  if ((rc = weft__stream_set_tls(s, t))) return rc;
  return weft__tls_handshake(t, fd, ctx, deadline);
}

int weft_stream_start_tls(weft_stream *s, weft_tls_ctx *ctx, bool server_side, const char *server_name) {
  return start_tls(s, ctx, server_side, server_name, WEFT__NO_DEADLINE);
}

int weft_open_connection_tls(const char *host, uint16_t port, int64_t deadline, weft_tls_ctx *ctx,
                             const char *server_name, weft_stream **out) {
  if (!out || !ctx || ctx->server) return -EINVAL;
  weft_stream *s;
  int rc = weft_open_connection(host, port, deadline, &s);
  if (rc) return rc;
  rc = start_tls(s, ctx, false, server_name ? server_name : host, deadline);
  if (rc) {
    weft_stream_abort(s);
    weft_stream_wait_closed(s);
    return rc;
  }
  *out = s;
  return 0;
}

bool weft_stream_is_tls(const weft_stream *s) { return s && weft__stream_tls(s); }

int weft_stream_tls_alpn(const weft_stream *s, char *buf, size_t cap) {
  if (!s || !weft__stream_tls(s)) return -EINVAL;
  return weft__tls_alpn(weft__stream_tls(s), buf, cap);
}

int weft_stream_tls_server_name(const weft_stream *s, char *buf, size_t cap) {
  if (!s || !weft__stream_tls(s)) return -EINVAL;
  return weft__tls_server_name(weft__stream_tls(s), buf, cap);
}

int weft_stream_tls_error(weft_stream *s, char *buf, size_t cap) {
  if (!s || !weft__stream_tls(s)) return -EINVAL;
  return weft__tls_error(weft__stream_tls(s), buf, cap);
}

const char *weft_stream_tls_version(const weft_stream *s) {
  if (!s || !weft__stream_tls(s)) return NULL;
  return weft__tls_version(weft__stream_tls(s));
}
