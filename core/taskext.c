/* core/taskext.c: creating and freeing a task's out-of-line state (the
 * protocol is in core/taskext.h). */
#include "core/taskext.h"

#include <sched.h>

#include "core/alloc.h"
#include "core/runtime.h"

weft__task_ext *weft__ext_get(weft__task *t) {
  weft__task_ext *e = weft__ext_peek(t);
  if (e) return e;
  e = weft__zalloc(sizeof *e);
  if (!e) return NULL;
  weft__spin_init(&e->lock);
  /* release: pairs with the acquire in weft__ext_peek: a timer or a lister
   * that finds the pointer finds the lock initialised */
  weft__store(&t->ext, e, RELEASE);
  return e;
}

void weft__debug_misuse(const char *what);

void weft__ext_task_end(weft__task *t) {
  weft__task_ext *e = weft__ext_peek(t);
  if (!e) return;
  if (e->ctx) {
    weft__ctx_unref(e->ctx);
    e->ctx = NULL;
  }
  weft__spin_lock(&e->lock);
  for (;;) { /* a scope's timer may be expiring it right now: let it finish (timeout.c) */
    if (!weft__timeout_any_firing(e)) break;
    weft__spin_unlock(&e->lock);
    sched_yield();
    weft__spin_lock(&e->lock);
  }
  bool stray = e->scopes != NULL;
  e->scopes = NULL; /* their stale timer entries find no scope */
  weft__spin_unlock(&e->lock);
  if (stray) weft__debug_misuse("a task ended inside a timeout scope it never left");
}

void weft__ext_free_all(weft__runtime *rt) {
  /* acquire: pairs with the release push of records in the arena */
  for (weft__task *t = weft__load(&rt->all_tasks, ACQUIRE); t; t = t->arena_next) {
    weft__task_ext *e = weft__ext_peek(t);
    if (!e) continue;
    if (e->ctx) weft__ctx_unref(e->ctx);
    weft__free(e, sizeof *e);
    weft__store(&t->ext, NULL, RELAXED); /* relaxed: every worker has stopped */
  }
}
