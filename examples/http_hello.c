/* examples/http_hello.c: an HTTP/1.1 keep-alive server that answers every
 * request with "Hello, World!" (the http_plaintext server of
 * ../shared/BENCHMARKS.md: bench/run serve_http).
 *
 *     http_hello [--host H] [--port P] [--workers N] [--max-s S] [--placement rr|local]
 *
 * The handler is examples/http_handler.h; flags, signals and shutdown are
 * examples/server_main.h's (SIGINT/SIGTERM stop it cleanly).
 */
#define _GNU_SOURCE
#include "http_handler.h"
#include "server_main.h"

int main(int argc, char **argv) {
  return example_server_main(&(example_server){.name = "http_hello", .port = 8080, .handler = serve}, argc, argv);
}
