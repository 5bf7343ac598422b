// tests/api_headers.cc: the public headers compile as C++17 (the benchmarks
// are C++), with C linkage for the API, and give what a C++ user expects.
// Tier: api (public headers only; linked against libweft.so like a user).
//
// This file includes the umbrella header first, then every header by name.
// That each header also compiles on its own, first in its translation unit,
// in C11 and in C++17, is checked by the one-line sources that
// tests/extra.cmake generates per include/weft/*.h and adds to this target.
#include <weft/weft.h>

#include <weft/core.h>
#include <weft/io.h>
#include <weft/sync.h>
#include <weft/version.h>
#if __has_include(<weft/net.h>)
#include <weft/net.h>
#endif
#if __has_include(<weft/process.h>)
#include <weft/process.h>
#endif

#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>

// The version macros agree with each other.
static_assert(WEFT_VERSION_MAJOR >= 0 && WEFT_VERSION_MINOR >= 0 && WEFT_VERSION_PATCH >= 0, "version");
static_assert(sizeof(WEFT_VERSION_STRING) > 1, "WEFT_VERSION_STRING");

// Handles and configuration are plain C structs in C++ too.
static_assert(std::is_trivially_copyable<weft_task>::value, "weft_task is a small value");
static_assert(std::is_standard_layout<weft_config>::value, "weft_config is a C struct");
static_assert(std::is_trivial<weft_event>::value && std::is_trivial<weft_queue>::value,
              "embeddable objects are plain storage");
static_assert(alignof(weft_event) >= 8 && alignof(weft_queue) >= 8, "opaque storage alignment");

// The API has C linkage: a pointer to it is an ordinary C function pointer type.
static_assert(std::is_same<decltype(&weft_spawn), weft_task (*)(weft_fn, void *)>::value, "weft_spawn");
static_assert(std::is_same<decltype(&weft_run), int (*)(weft_fn, void *, const weft_config *)>::value, "weft_run");

extern "C" int api_headers_task(void *) { return 0; }
static_assert(std::is_convertible<decltype(&api_headers_task), weft_fn>::value, "a C++ task function");

int main() {
  // Nothing is called: this test proves that the headers compile from C++.
  weft_config cfg{}; // zero-initialised: every default
  weft_task t = WEFT_TASK_NULL;
  std::string v = std::to_string(WEFT_VERSION_MAJOR) + "." + std::to_string(WEFT_VERSION_MINOR) + "." +
                  std::to_string(WEFT_VERSION_PATCH);
  if (v != WEFT_VERSION_STRING) {
    std::fprintf(stderr, "api_headers: WEFT_VERSION_STRING is %s, the numbers say %s\n", WEFT_VERSION_STRING,
                 v.c_str());
    return 1;
  }
  if (!weft_task_is_null(t) || cfg.workers != 0) return 1;
  std::printf("api_headers: weft %s headers compile as C++%ld\n", WEFT_VERSION_STRING, __cplusplus / 100 % 100);
  return 0;
}
