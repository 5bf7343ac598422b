/* examples/https_hello.c: examples/http_hello.c over TLS: an HTTP/1.1
 * keep-alive server that answers every request with "Hello, World!", each
 * connection a TLS stream (weft/tls.h: the server's opts.tls; ALPN
 * "http/1.1"). The handler is http_hello's (examples/http_handler.h).
 *
 *     https_hello --cert PEM --key PEM [--host H] [--port P] [--workers N] [--max-s S] [--placement rr|local]
 *
 * A client whose TLS handshake fails or stalls for 10 s is reset without
 * reaching the handler. Flags, signals and shutdown: examples/server_main.h.
 */
#define _GNU_SOURCE
#include "http_handler.h"
#include "server_main.h"

int main(int argc, char **argv) {
  return example_server_main(&(example_server){.name = "https_hello", .port = 8080, .handler = serve, .tls = true},
                             argc, argv);
}
