/* tests/net_test_util.h: set-up code that the network tests share
 * (test_net_tls.c, test_protocol.c, test_protocol_tls.c): a server's port,
 * test certificates and TLS contexts, and a recording protocol for the
 * transport tests. Header-only static helpers (tests build with
 * -Wno-unused-function); include after test.h and test_util.h. */
#ifndef WEFT_TESTS_NET_TEST_UTIL_H
#define WEFT_TESTS_NET_TEST_UTIL_H

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <weft/weft.h>

#include "test.h"

/* The port a server listens on. */
static uint16_t port_of(weft_server *srv) {
  weft_addr a;
  ASSERT_EQ(weft_server_addr(srv, &a), 0);
  return (uint16_t)weft_addr_port(&a);
}

/* The certificates are made in each test with OpenSSL's library (not the
 * command line, which may be missing): a CA, a server certificate it signs
 * (CN localhost, SAN DNS:localhost and IP:127.0.0.1, P-256 keys), an
 * expired one, and a second CA nobody trusts, written as PEM files into a
 * fresh temporary directory (make_certs; remove_certs deletes them). */

static char dir[64], ca_pem[128], other_ca_pem[128], srv_pem[128], srv_key[128], expired_pem[128], bad_pem[128];

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value) {
  X509V3_CTX c;
  X509V3_set_ctx_nodb(&c);
  X509V3_set_ctx(&c, issuer, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &c, nid, value);
  ASSERT_TRUE(e);
  ASSERT_EQ(X509_add_ext(x, e, -1), 1);
  X509_EXTENSION_free(e);
}

/* A certificate for key, signed by issuer (NULL: self-signed), valid from
 * now + from_s to now + to_s. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, bool ca, long from_s,
                       long to_s) {
  static int serial = 1;
  X509 *x = X509_new();
  ASSERT_TRUE(x);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), from_s);
  X509_gmtime_adj(X509_getm_notAfter(x), to_s);
  X509_set_pubkey(x, key);
  X509_NAME *n = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
  X509 *iss = issuer ? issuer : x;
  add_ext(x, iss, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  add_ext(x, iss, NID_subject_key_identifier, "hash");
  if (ca) {
    add_ext(x, iss, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x, iss, NID_authority_key_identifier, "keyid:always");
    add_ext(x, iss, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  }
  ASSERT_GT(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()), 0);
  return x;
}

static void write_cert(const char *path, X509 *x) {
  FILE *f = fopen(path, "w");
  ASSERT_TRUE(f);
  ASSERT_EQ(PEM_write_X509(f, x), 1);
  fclose(f);
}

static void write_key(const char *path, EVP_PKEY *k) {
  FILE *f = fopen(path, "w");
  ASSERT_TRUE(f);
  ASSERT_EQ(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
  fclose(f);
}

static void make_certs(void) {
  snprintf(dir, sizeof dir, "/tmp/weft-tls-XXXXXX");
  ASSERT_TRUE(mkdtemp(dir));
  snprintf(ca_pem, sizeof ca_pem, "%s/ca.pem", dir);
  snprintf(other_ca_pem, sizeof other_ca_pem, "%s/other_ca.pem", dir);
  snprintf(srv_pem, sizeof srv_pem, "%s/server.pem", dir);
  snprintf(srv_key, sizeof srv_key, "%s/server.key", dir);
  snprintf(expired_pem, sizeof expired_pem, "%s/expired.pem", dir);
  snprintf(bad_pem, sizeof bad_pem, "%s/bad.pem", dir);
  EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *other_key = EVP_EC_gen("P-256"), *key = EVP_EC_gen("P-256");
  ASSERT_TRUE(ca_key && other_key && key);
  X509 *ca = make_cert(ca_key, "weft test CA", NULL, NULL, true, -3600, 86400);
  X509 *other = make_cert(other_key, "weft other CA", NULL, NULL, true, -3600, 86400);
  X509 *srv = make_cert(key, "localhost", ca, ca_key, false, -3600, 86400);
  X509 *expired = make_cert(key, "localhost", ca, ca_key, false, -7200, -3600);
  write_cert(ca_pem, ca);
  write_cert(other_ca_pem, other);
  write_cert(srv_pem, srv);
  write_cert(expired_pem, expired);
  write_key(srv_key, key);
  FILE *f = fopen(bad_pem, "w");
  fputs("not a certificate\n", f);
  fclose(f);
  X509_free(ca);
  X509_free(other);
  X509_free(srv);
  X509_free(expired);
  EVP_PKEY_free(ca_key);
  EVP_PKEY_free(other_key);
  EVP_PKEY_free(key);
}

static void remove_certs(void) {
  const char *files[] = {ca_pem, other_ca_pem, srv_pem, srv_key, expired_pem, bad_pem};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) unlink(files[i]);
  rmdir(dir);
}

/* A test body with fresh certificates: weft_run(fn) on two workers. */
static void run_with_certs(weft_fn fn, void *arg) {
  make_certs();
  weft_config c = {0};
  c.workers = 2;
  ASSERT_EQ(weft_run(fn, arg, &c), 0);
  remove_certs();
}

static weft_tls_ctx *server_ctx(const char *cert, const char *alpn, int64_t hs_timeout) {
  weft_tls_opts o = {.cert_file = cert, .key_file = srv_key, .alpn = alpn, .handshake_timeout_ns = hs_timeout};
  weft_tls_ctx *c = NULL;
  ASSERT_EQ(weft_tls_ctx_new(&c, true, &o), 0);
  return c;
}

static weft_tls_ctx *client_ctx(const char *ca, const char *alpn) {
  weft_tls_opts o = {.ca_file = ca, .alpn = alpn};
  weft_tls_ctx *c = NULL;
  ASSERT_EQ(weft_tls_ctx_new(&c, false, &o), 0);
  return c;
}


/* ------------------------------------------------------------ a recording protocol */

typedef struct rec {
  char trace[64];           /* callbacks in order; runs of data collapse to one 'D' */
  _Atomic int tlen;
  unsigned char *data;      /* everything received (data_received/buffer_updated) */
  _Atomic size_t len;
  size_t cap;
  int lost_err;
  _Atomic int lost_count;
  _Atomic int pauses, resumes;
  weft_event lost;          /* set by connection_lost */
  weft_event made;          /* set by connection_made */
  weft_transport *t;        /* held from connection_made on (released by the test) */
  /* behaviour */
  bool echo;                /* write back what arrives */
  bool keep_open_on_eof;    /* eof_received's answer */
  const char *eof_reply;    /* written from eof_received, then close */
  bool close_in_data;       /* close() inside the first data_received */
  bool abort_in_data;       /* abort() inside the first data_received */
  char tls_error[160];      /* TLS: get_extra_info "tls_error" in connection_lost */
  bool pause_in_made;       /* pause_reading() inside connection_made */
  size_t blob;              /* write this many pattern bytes in connection_made */
  size_t high, low;         /* watermarks set in connection_made (0: default) */
  /* buffered protocol */
  unsigned char *ubuf;      /* the user's memory: buffer_updated fills it in order */
  size_t ucap, upiece;
} rec;

static void rec_init(rec *r) {
  memset(r, 0, sizeof *r);
  weft_event_init(&r->lost);
  weft_event_init(&r->made);
}

static void rec_free(rec *r) {
  free(r->data);
  if (r->t) weft_transport_release(r->t);
}

static void mark(rec *r, char c) {
  int n = atomic_load(&r->tlen);
  if (c == 'D' && n > 0 && r->trace[n - 1] == 'D') return;
  if (n < (int)sizeof r->trace - 1) {
    r->trace[n] = c;
    atomic_store(&r->tlen, n + 1); /* the trace is read after `lost` (an event: ordered) */
  }
}

static unsigned char pattern(size_t i) { return (unsigned char)(i * 2654435761u >> 13); }

static void keep(rec *r, const void *data, size_t n) {
  size_t len = atomic_load(&r->len);
  if (len + n > r->cap) {
    r->cap = (len + n) * 2;
    r->data = realloc(r->data, r->cap);
  }
  memcpy(r->data + len, data, n);
  atomic_store(&r->len, len + n);
}

static void on_made(weft_transport *t, void *u) {
  rec *r = u;
  mark(r, 'M');
  weft_transport_hold(t);
  r->t = t;
  if (r->high) ASSERT_EQ(weft_transport_set_write_buffer_limits(t, r->high, r->low), 0);
  if (r->pause_in_made) ASSERT_EQ(weft_transport_pause_reading(t), 0);
  if (r->blob) {
    unsigned char *b = malloc(r->blob);
    for (size_t i = 0; i < r->blob; i++) b[i] = pattern(i);
    ASSERT_EQ(weft_transport_write(t, b, r->blob), 0);
    free(b); /* the transport copied what it did not send */
  }
  weft_event_set(&r->made);
}

static void on_data(weft_transport *t, const void *data, size_t n, void *u) {
  rec *r = u;
  ASSERT_TRUE(n > 0);
  mark(r, 'D');
  keep(r, data, n);
  if (r->echo) ASSERT_EQ(weft_transport_write(t, data, n), 0);
  if (r->close_in_data) {
    weft_transport_close(t);
    ASSERT_TRUE(weft_transport_is_closing(t));
    ASSERT_EQ(weft_transport_write(t, "x", 1), -EPIPE);
  }
  if (r->abort_in_data) weft_transport_abort(t);
}

static bool on_eof(weft_transport *t, void *u) {
  rec *r = u;
  mark(r, 'E');
  if (r->eof_reply) {
    ASSERT_EQ(weft_transport_write(t, r->eof_reply, strlen(r->eof_reply)), 0);
    weft_transport_close(t);
  }
  return r->keep_open_on_eof;
}

static void on_lost(weft_transport *t, int err, void *u) {
  rec *r = u;
  (void)t;
  mark(r, 'L');
  if (weft_transport_get_extra_info(t, "tls_error", r->tls_error, sizeof r->tls_error) < 0) r->tls_error[0] = 0;
  r->lost_err = err;
  atomic_fetch_add(&r->lost_count, 1);
  weft_event_set(&r->lost);
}

static void on_pause(weft_transport *t, void *u) {
  rec *r = u;
  ASSERT_TRUE(weft_transport_get_write_buffer_size(t) > 0);
  mark(r, 'P');
  atomic_fetch_add(&r->pauses, 1);
}

static void on_resume(weft_transport *t, void *u) {
  rec *r = u;
  size_t low;
  weft_transport_get_write_buffer_limits(t, NULL, &low);
  ASSERT_TRUE(weft_transport_get_write_buffer_size(t) <= low);
  mark(r, 'R');
  atomic_fetch_add(&r->resumes, 1);
}

static void *on_get_buffer(weft_transport *t, size_t hint, size_t *len, void *u) {
  rec *r = u;
  (void)t;
  ASSERT_TRUE(hint > 0);
  size_t used = atomic_load(&r->len);
  if (used >= r->ucap) return NULL; /* full: the transport aborts (-ENOBUFS) */
  *len = r->ucap - used < r->upiece ? r->ucap - used : r->upiece;
  return r->ubuf + used;
}

static void on_buffer_updated(weft_transport *t, size_t n, void *u) {
  rec *r = u;
  (void)t;
  ASSERT_TRUE(n > 0);
  mark(r, 'D');
  atomic_store(&r->len, atomic_load(&r->len) + n); /* the bytes are already in place */
}

static weft_protocol proto_of(rec *r) {
  weft_protocol p = {.user = r, .connection_made = on_made, .eof_received = on_eof, .connection_lost = on_lost,
                     .pause_writing = on_pause, .resume_writing = on_resume};
  if (r->ubuf) {
    p.get_buffer = on_get_buffer;
    p.buffer_updated = on_buffer_updated;
  } else {
    p.data_received = on_data;
  }
  return p;
}

/* A server's recs: the factory hands out the next one, configured like
 * `tmpl`. */
#define MAX_CONNS 64
typedef struct server_recs {
  rec tmpl;
  rec recs[MAX_CONNS];
  _Atomic int set_up[MAX_CONNS]; /* the factory finished with recs[i] (server_rec waits for it) */
  _Atomic int n;
} server_recs;

static int factory(weft_protocol *out, void *arg) {
  server_recs *s = arg;
  int i = atomic_fetch_add(&s->n, 1);
  ASSERT_TRUE(i < MAX_CONNS);
  rec *r = &s->recs[i];
  rec_init(r);
  rec keep_events = *r;
  *r = s->tmpl;
  r->lost = keep_events.lost;
  r->made = keep_events.made;
  *out = proto_of(r);
  atomic_store(&s->set_up[i], 1); /* after the copy: the test may look at it now */
  return 0;
}

/* A protocol server on 127.0.0.1 (opts: NULL or, say, TLS) handing out
 * s's recs; returns its port. */
static uint16_t start_opts(weft_server **srv, server_recs *s, const weft_server_opts *opts) {
  atomic_store(&s->n, 0);
  for (int i = 0; i < MAX_CONNS; i++) atomic_store(&s->set_up[i], 0);
  ASSERT_EQ(weft_create_server(srv, "127.0.0.1", 0, factory, s, opts), 0);
  return port_of(*srv);
}

static uint16_t start(weft_server **srv, server_recs *s) { return start_opts(srv, s, NULL); }

/* Wait until the server made connection i. */
static rec *server_rec(server_recs *s, int i) {
  for (int k = 0; k < 10000 && (atomic_load(&s->n) <= i || !atomic_load(&s->set_up[i])); k++)
    weft_sleep_ns(1000000);
  ASSERT_TRUE(atomic_load(&s->n) > i && atomic_load(&s->set_up[i]));
  ASSERT_EQ(weft_event_wait(&s->recs[i].made), 0);
  return &s->recs[i];
}

static void assert_trace(rec *r, const char *want) {
  r->trace[atomic_load(&r->tlen)] = 0;
  if (strcmp(r->trace, want) != 0) TEST_FAIL("trace %s, want %s", r->trace, want);
}


#endif
