/* core/taskvar.c: task-local values (contextvars).
 *
 * A task's values are a weft__ctx (core/taskext.h): a small array of
 * {variable id, value}, immutable once more than one task holds it, shared
 * by reference count. Spawning shares the spawner's map (one increment, in
 * weft_spawn: no copy, no allocation but the child's ext the first time its
 * record needs one); set() copies the map first when it is shared
 * (copy-on-write) or full, so a child's set() never shows in its parent and
 * the other way round: the semantics of a copied Context, at the cost of a
 * copy only when someone writes. A lookup is a linear scan: programs use a
 * handful of variables.
 *
 * Only the task itself touches its ctx (and its spawner, before the child is
 * published), so there is no lock; refs is atomic because the tasks sharing
 * a map drop it from different threads.
 */
#include <errno.h>

#include <weft/task.h>

#include "core/alloc.h"
#include "core/atomic.h"
#include "core/task.h"
#include "core/taskext.h"

_Thread_local weft__ctx *weft__thread_ctx;
_Thread_local bool weft__thread_ctx_cb;

/* The task whose values the caller reads and sets: none outside a task, or
 * in a done callback (core/taskext.h, DONE CALLBACKS). */
static weft__task *values_task(void) { return weft__thread_ctx_cb ? NULL : weft__task_self(); }

weft__ctx *weft__ctx_capture(void) {
  weft__task *t = values_task();
  if (!t) return weft__ctx_ref(weft__thread_ctx);
  weft__task_ext *e = weft__ext_peek(t);
  return e ? weft__ctx_ref(e->ctx) : NULL;
}

static _Atomic uint64_t next_var_id = 1; /* relaxed: ids only need to be unique */

static size_t ctx_size(uint32_t cap) { return sizeof(weft__ctx) + cap * sizeof(((weft__ctx *)0)->v[0]); }

void weft__ctx_unref(weft__ctx *c) {
  /* acq_rel: the last holder sees the others' reads done before freeing */
  if (c && weft__fetch_sub(&c->refs, 1, ACQ_REL) == 1) weft__free(c, ctx_size(c->cap));
}

int weft_taskvar_init(weft_taskvar *v, void *default_value) {
  if (!v) return -EINVAL;
  v->id = weft__fetch_add(&next_var_id, 1, RELAXED);
  v->default_value = default_value;
  return 0;
}

void *weft_taskvar_get(const weft_taskvar *v) {
  if (!v) return NULL;
  weft__task *t = values_task();
  weft__task_ext *e = t ? weft__ext_peek(t) : NULL;
  weft__ctx *c = t ? (e ? e->ctx : NULL) : weft__thread_ctx; /* a pool thread: its caller's values */
  if (c)
    for (uint32_t i = 0; i < c->n; i++)
      if (c->v[i].id == v->id) return c->v[i].value;
  return v->default_value;
}

int weft_taskvar_set(weft_taskvar *v, void *value, void **old) {
  weft__task *t = values_task();
  if (!t || !v || v->id == 0) return -EINVAL;
  /* A done callback that the ended task runs on its own stack
   * (weft__task_finish) is no longer in the task: its values were dropped
   * (weft__ext_task_end), and the ext outlives the task with the record, so
   * a map set now would become the values of the record's next task.
   * relaxed: only the task itself sets ENDED on itself, before its callbacks */
  if (weft__load(&t->done, RELAXED) & WEFT__DL_ENDED) return -EINVAL;
  weft__task_ext *e = weft__ext_get(t);
  if (!e) return -ENOMEM;
  weft__ctx *c = e->ctx;
  uint32_t at = c ? c->n : 0;
  if (c)
    for (uint32_t i = 0; i < c->n; i++)
      if (c->v[i].id == v->id) at = i;
  if (old) *old = c && at < c->n ? c->v[at].value : v->default_value;
  /* acquire: pairs with the other holders' release decrements (none left but us) */
  bool shared = c && weft__load(&c->refs, ACQUIRE) > 1;
  bool full = !c || (at == c->n && c->n == c->cap);
  if (shared || full) {
    uint32_t n = c ? c->n : 0;
    uint32_t cap = full ? (n ? 2 * n : 4) : c->cap;
    weft__ctx *nc = weft__alloc(ctx_size(cap));
    if (!nc) return -ENOMEM;
    weft__store(&nc->refs, 1, RELAXED); /* relaxed: ours alone */
    nc->n = n;
    nc->cap = cap;
    for (uint32_t i = 0; i < n; i++) nc->v[i] = c->v[i];
    weft__ctx_unref(c);
    e->ctx = c = nc;
  }
  if (at == c->n) {
    c->v[at].id = v->id;
    c->n++;
  }
  c->v[at].value = value;
  return 0;
}
