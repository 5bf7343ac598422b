/* examples/hello.c: asyncio's first example, in C: tasks that sleep,
 * run concurrently on every worker, and are awaited.
 *
 *   import asyncio
 *   async def say(what, delay): await asyncio.sleep(delay); print(what)
 *   async def main():
 *       a = asyncio.create_task(say("hello", 0.1)); b = asyncio.create_task(say("world", 0.2))
 *       await a; await b
 *   asyncio.run(main())
 */
#include <stdio.h>

#include <weft/weft.h>

struct say {
  const char *what;
  int64_t delay_ns;
};

static int say(void *arg) {
  struct say *s = arg;
  int rc = weft_sleep_ns(s->delay_ns);
  if (rc < 0) return rc; /* -ECANCELED */
  printf("%s (worker %d)\n", s->what, weft_worker_id());
  return 0;
}

static int main_task(void *arg) {
  (void)arg;
  struct say a = {"hello", 100000000}, b = {"world", 200000000};
  weft_task ta = weft_spawn(say, &a), tb = weft_spawn(say, &b);
  int rc = weft_join(ta);
  if (rc == 0) rc = weft_join(tb);
  weft_task_release(ta);
  weft_task_release(tb);
  return rc;
}

int main(void) {
  int rc = weft_run(main_task, NULL, NULL);
  return rc < 0 ? 1 : 0;
}
