/* net/addr.c: socket addresses (IPv4, IPv6, Unix paths): parse, format,
 * and name resolution.
 *
 * Parsing is numeric only (inet_pton, if_nametoindex for a scope) and makes
 * no call that can block. Name resolution is getaddrinfo(3), which can
 * block for seconds (DNS): it runs on the blocking pool
 * (weft__blocking_call, mode WAIT: a cancelled resolution waits for the
 * pool thread, whose job lives on the caller's stack, and returns
 * -ECANCELED). The results are copied into the caller's array on the pool
 * thread and freeaddrinfo'd there, so nothing libc allocated crosses to the
 * runtime's allocator.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/net.h>

#include "core/blocking.h"

int weft_addr_ip(weft_addr *out, const char *ip, uint16_t port) {
  if (!out || !ip) return -EINVAL;
  memset(out, 0, sizeof *out);
  if (inet_pton(AF_INET, ip, &out->u.in4.sin_addr) == 1) {
    out->u.in4.sin_family = AF_INET;
    out->u.in4.sin_port = htons(port);
    out->len = sizeof(struct sockaddr_in);
    return 0;
  }
  char tmp[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  size_t n = strlen(ip);
  if (n >= sizeof tmp) return -EINVAL;
  memcpy(tmp, ip, n + 1);
  char *scope = strchr(tmp, '%');
  if (scope) *scope++ = 0;
  if (inet_pton(AF_INET6, tmp, &out->u.in6.sin6_addr) != 1) return -EINVAL;
  if (scope) {
    unsigned idx = if_nametoindex(scope);
    if (!idx) { /* a decimal number, digits only (strtoul alone takes blanks and a sign: "%-0", "% 1") */
      char *end;
      unsigned long v = strtoul(scope, &end, 10);
      if (*scope < '0' || *scope > '9' || *end || v > UINT32_MAX) return -EINVAL;
      idx = (unsigned)v;
    }
    out->u.in6.sin6_scope_id = idx;
  }
  out->u.in6.sin6_family = AF_INET6;
  out->u.in6.sin6_port = htons(port);
  out->len = sizeof(struct sockaddr_in6);
  return 0;
}

int weft_addr_unix(weft_addr *out, const char *path) {
  if (!out || !path || !*path) return -EINVAL;
  memset(out, 0, sizeof *out);
  size_t n = strlen(path);
  if (n > sizeof out->u.un.sun_path) return -ENAMETOOLONG;
  out->u.un.sun_family = AF_UNIX;
  memcpy(out->u.un.sun_path, path, n);
  if (path[0] == '@') { /* abstract: a leading NUL, no terminator counted */
    out->u.un.sun_path[0] = 0;
    out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  } else { /* the terminator counted when it fits (a full sun_path has none: Linux takes it) */
    size_t len = offsetof(struct sockaddr_un, sun_path) + n + 1;
    out->len = (socklen_t)(len > sizeof(struct sockaddr_un) ? sizeof(struct sockaddr_un) : len);
  }
  return 0;
}

static int parse_port(const char *s, uint16_t *port) {
  if (!*s) return -EINVAL;
  unsigned long v = 0;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9') return -EINVAL;
    v = v * 10 + (unsigned long)(*p - '0');
    if (v > 65535) return -EINVAL;
  }
  *port = (uint16_t)v;
  return 0;
}

int weft_addr_parse(weft_addr *out, const char *text) {
  if (!out || !text || !*text) return -EINVAL;
  if (!strncmp(text, "unix:", 5)) return weft_addr_unix(out, text + 5);
  if (text[0] == '/' || text[0] == '@') return weft_addr_unix(out, text);
  char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  const char *colon;
  size_t hlen;
  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (!close || close[1] != ':') return -EINVAL;
    hlen = (size_t)(close - text - 1);
    if (hlen >= sizeof host) return -EINVAL;
    memcpy(host, text + 1, hlen);
    colon = close + 1;
  } else {
    colon = strrchr(text, ':');
    if (!colon) return -EINVAL;
    hlen = (size_t)(colon - text);
    if (hlen >= sizeof host || memchr(text, ':', hlen)) return -EINVAL; /* v6 needs brackets */
    memcpy(host, text, hlen);
  }
  host[hlen] = 0;
  uint16_t port;
  int rc = parse_port(colon + 1, &port);
  if (rc) return rc;
  rc = weft_addr_ip(out, host, port);
  if (rc) return rc;
  if (text[0] == '[' && out->u.sa.sa_family != AF_INET6) return -EINVAL;
  return 0;
}

int weft_addr_format(const weft_addr *a, char *buf, size_t len) {
  if (!a || !buf || !len || !a->len) return -EINVAL;
  char ip[INET6_ADDRSTRLEN];
  int n;
  switch (a->u.sa.sa_family) {
  case AF_INET:
    if (!inet_ntop(AF_INET, &a->u.in4.sin_addr, ip, sizeof ip)) return -EINVAL;
    n = snprintf(buf, len, "%s:%u", ip, (unsigned)ntohs(a->u.in4.sin_port));
    break;
  case AF_INET6:
    if (!inet_ntop(AF_INET6, &a->u.in6.sin6_addr, ip, sizeof ip)) return -EINVAL;
    if (a->u.in6.sin6_scope_id)
      n = snprintf(buf, len, "[%s%%%u]:%u", ip, (unsigned)a->u.in6.sin6_scope_id, (unsigned)ntohs(a->u.in6.sin6_port));
    else
      n = snprintf(buf, len, "[%s]:%u", ip, (unsigned)ntohs(a->u.in6.sin6_port));
    break;
  case AF_UNIX: {
    size_t off = offsetof(struct sockaddr_un, sun_path);
    size_t plen = a->len > off ? a->len - off : 0;
    const char *p = a->u.un.sun_path;
    if (plen && p[0] == 0) { /* abstract */
      n = snprintf(buf, len, "@%.*s", (int)(plen - 1), p + 1);
    } else {
      n = snprintf(buf, len, "%.*s", (int)strnlen(p, plen), p);
    }
    break;
  }
  default:
    return -EINVAL;
  }
  if (n < 0) return -EINVAL;
  return (size_t)n >= len ? -ENOSPC : n;
}

int weft_addr_port(const weft_addr *a) {
  if (!a || !a->len) return -EINVAL;
  if (a->u.sa.sa_family == AF_INET) return ntohs(a->u.in4.sin_port);
  if (a->u.sa.sa_family == AF_INET6) return ntohs(a->u.in6.sin6_port);
  return -EINVAL;
}

int weft_addr_family(const weft_addr *a) {
  if (!a || !a->len) return -EINVAL;
  int f = a->u.sa.sa_family;
  return (f == AF_INET || f == AF_INET6 || f == AF_UNIX) ? f : -EINVAL;
}

/* ------------------------------------------------------------ resolution */

typedef struct resolve_job {
  const char *host;
  char port[8];
  int family;
  unsigned flags;
  weft_addr *out;
  size_t max;
} resolve_job;

static int gai_errno(int rc) {
  switch (rc) {
  case EAI_NONAME:
#ifdef EAI_NODATA
  case EAI_NODATA:
#endif
  case EAI_SERVICE:
    return -ENOENT;
  case EAI_AGAIN: return -EAGAIN;
  case EAI_MEMORY: return -ENOMEM;
  case EAI_FAMILY:
  case EAI_BADFLAGS: return -EINVAL;
  default: return -EIO;
  }
}

/* On a pool thread: getaddrinfo, copy, free. */
static int resolve_run(void *arg) {
  resolve_job *j = arg;
  struct addrinfo hints = {.ai_family = j->family, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV | ((j->flags & WEFT_RESOLVE_PASSIVE) ? AI_PASSIVE : 0)};
  if (j->host) hints.ai_flags |= AI_ADDRCONFIG;
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(j->host, j->port, &hints, &res);
  if (rc) return rc == EAI_SYSTEM ? -EIO : gai_errno(rc);
  size_t n = 0;
  for (struct addrinfo *ai = res; ai && n < j->max; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof j->out[n].u || (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)) continue;
    memset(&j->out[n], 0, sizeof j->out[n]);
    memcpy(&j->out[n].u, ai->ai_addr, ai->ai_addrlen);
    j->out[n].len = ai->ai_addrlen;
    n++;
  }
  freeaddrinfo(res);
  return n ? (int)n : -ENOENT;
}

int weft_resolve(const char *host, uint16_t port, int family, unsigned flags, weft_addr *out, size_t max) {
  if (!out || !max || (flags & ~WEFT_RESOLVE_PASSIVE)) return -EINVAL;
  if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6) return -EINVAL;
  if (max > 1024) max = 1024;
  if (host && !*host) host = NULL;
  /* A numeric address needs no pool thread. */
  if (host && weft_addr_ip(&out[0], host, port) == 0) {
    if (family != AF_UNSPEC && out[0].u.sa.sa_family != family) return -ENOENT;
    return 1;
  }
  resolve_job j = {.host = host, .family = family, .flags = flags, .out = out, .max = max};
  snprintf(j.port, sizeof j.port, "%u", (unsigned)port);
  return weft__blocking_call(resolve_run, &j, WEFT__BLOCKING_WAIT);
}
