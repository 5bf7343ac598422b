/* tests/test_callback.c: call_soon/call_later/call_at, task-local values,
 * and introspection (waiting-on descriptions, dumps, SIGQUIT). */
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "task_util.h"
#include "test_util.h"

/* ------------------------------------------------------------ callbacks */

static int order[16];
static _Atomic int n_order;
static void record_cb(void *arg) { order[atomic_fetch_add(&n_order, 1)] = (int)(intptr_t)arg; }

static int soon_main(void *arg) {
  (void)arg;
  atomic_store(&n_order, 0);
  for (int i = 0; i < 5; i++) ASSERT_EQ(weft_call_soon(record_cb, (void *)(intptr_t)i, NULL), 0);
  weft_callback *h;
  ASSERT_EQ(weft_call_soon(record_cb, (void *)99, &h), 0);
  ASSERT_EQ(weft_callback_cancel(h), 1);
  ASSERT_EQ(weft_callback_cancel(h), 0);
  weft_callback_release(h);
  ASSERT_EQ(weft_pin(), 0); /* the callbacks run on this worker: wait here */
  for (int i = 0; i < 1000 && atomic_load(&n_order) < 5; i++) weft_sleep_ns(1 * MS);
  weft_unpin();
  ASSERT_EQ(atomic_load(&n_order), 5);
  for (int i = 0; i < 5; i++) ASSERT_EQ(order[i], i); /* FIFO */
  /* a deadline already passed is as due as call_soon: FIFO with it (a
   * negative one ran ahead of the call_soons queued before it) */
  atomic_store(&n_order, 0);
  ASSERT_EQ(weft_call_soon(record_cb, (void *)0, NULL), 0);
  ASSERT_EQ(weft_call_at(-5, record_cb, (void *)1, NULL), 0);
  ASSERT_EQ(weft_call_at(INT64_MIN, record_cb, (void *)2, NULL), 0);
  ASSERT_EQ(weft_call_soon(record_cb, (void *)3, NULL), 0);
  ASSERT_EQ(weft_pin(), 0);
  for (int i = 0; i < 1000 && atomic_load(&n_order) < 4; i++) weft_sleep_ns(1 * MS);
  weft_unpin();
  ASSERT_EQ(atomic_load(&n_order), 4);
  for (int i = 0; i < 4; i++) ASSERT_EQ(order[i], i);
  /* call_later / call_at: in deadline order */
  atomic_store(&n_order, 0);
  int64_t now = weft_now_ns();
  ASSERT_EQ(weft_call_at(now + 6 * MS, record_cb, (void *)3, NULL), 0);
  ASSERT_EQ(weft_call_later(2 * MS, record_cb, (void *)1, NULL), 0);
  ASSERT_EQ(weft_call_later(4 * MS, record_cb, (void *)2, NULL), 0);
  ASSERT_EQ(weft_call_later(-1, record_cb, NULL, NULL), -EINVAL);
  ASSERT_EQ(weft_call_later(2000 * MS, record_cb, (void *)7, &h), 0);
  /* wait for the three (bounded: a loaded machine may run them late) */
  for (int i = 0; i < 1000 && atomic_load(&n_order) < 3; i++) weft_sleep_ns(1 * MS);
  ASSERT_EQ(atomic_load(&n_order), 3);
  ASSERT_EQ(order[0], 1);
  ASSERT_EQ(order[1], 2);
  ASSERT_EQ(order[2], 3);
  ASSERT_EQ(weft_callback_cancel(h), 1); /* (the entry stays until its time or shutdown) */
  weft_callback_release(h);
  /* a pending callback left at shutdown is dropped (ASan checks the leak) */
  ASSERT_EQ(weft_call_later(3600 * 1000 * MS, record_cb, (void *)8, NULL), 0);
  return 0;
}
TEST(callbacks_soon_later_at) {
  ASSERT_EQ(weft_call_soon(record_cb, NULL, NULL), -EINVAL); /* outside the workers */
  run_both(soon_main, NULL);
}

/* A callback runs in the scheduler context: it may spawn and set futures,
 * and suspending calls fail there. */
static weft_future cb_fut;
static int spawned_ran(void *arg) {
  (void)arg;
  weft_future_set(&cb_fut, 1, NULL);
  return 0;
}
static void spawning_cb(void *arg) {
  (void)arg;
  if (weft_sleep_ns(1) != -EINVAL || weft_current().rec != NULL) {
    weft_future_set(&cb_fut, -EPROTO, NULL);
    return;
  }
  weft_spawn_detached(spawned_ran, NULL);
}

static int cb_context_main(void *arg) {
  (void)arg;
  weft_future_init(&cb_fut);
  ASSERT_EQ(weft_call_soon(spawning_cb, NULL, NULL), 0);
  ASSERT_EQ(weft_future_await(&cb_fut, NULL), 1);
  return 0;
}
TEST(callbacks_run_in_scheduler_context) { run_both(cb_context_main, NULL); }

static void set_fut_cb(void *arg) { weft_future_set(arg, 5, NULL); }

TEST(callbacks_from_a_foreign_thread) {
  weft_config c = {0};
  c.workers = 2;
  weft_runtime *rt;
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  weft_future f;
  weft_future_init(&f);
  ASSERT_EQ(weft_runtime_call_soon(rt, set_fut_cb, &f, NULL), 0);
  for (int i = 0; i < 2000 && !weft_future_done(&f); i++) usleep(1000);
  ASSERT_EQ(weft_future_result(&f, NULL), 5);
  ASSERT_EQ(weft_future_destroy(&f), 0);
  weft_future_init(&f);
  weft_callback *h;
  ASSERT_EQ(weft_runtime_call_at(rt, weft_now_ns() + 5 * MS, set_fut_cb, &f, &h), 0);
  for (int i = 0; i < 2000 && !weft_future_done(&f); i++) usleep(1000);
  ASSERT_EQ(weft_future_result(&f, NULL), 5);
  ASSERT_EQ(weft_callback_cancel(h), 0); /* it ran */
  weft_callback_release(h);
  ASSERT_EQ(weft_future_destroy(&f), 0);
  weft_future_init(&f);
  ASSERT_EQ(weft_runtime_call_at(rt, weft_now_ns() + 50 * MS, set_fut_cb, &f, &h), 0);
  ASSERT_EQ(weft_callback_cancel(h), 1);
  weft_callback_release(h);
  usleep(100000);
  ASSERT_TRUE(!weft_future_done(&f)); /* cancelled: never ran */
  ASSERT_EQ(weft_runtime_shutdown(rt), 0);
}

/* Racy: cancel from another thread while the callback is due: exactly one
 * of "cancelled" and "ran" holds. */
static _Atomic int cb_ran;
static void count_ran(void *arg) {
  (void)arg;
  atomic_fetch_add(&cb_ran, 1);
}
TEST(callbacks_stress_cancel_vs_run) {
  weft_config c = {0};
  c.workers = tu_nproc();
  weft_runtime *rt;
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  long iters = tu_iters(3000);
  int cancelled = 0;
  atomic_store(&cb_ran, 0);
  for (long i = 0; i < iters; i++) {
    weft_callback *h;
    ASSERT_EQ(weft_runtime_call_soon(rt, count_ran, NULL, &h), 0);
    if (i % 3) sched_yield();
    cancelled += weft_callback_cancel(h);
    weft_callback_release(h);
  }
  for (int i = 0; i < 5000 && atomic_load(&cb_ran) + cancelled < iters; i++) usleep(1000);
  ASSERT_EQ(atomic_load(&cb_ran) + cancelled, iters);
  /* submitted and shut down at once: the submitting tasks may never run, the
   * entries never fire: nothing leaks (ASan), nothing runs */
  for (int i = 0; i < 50; i++) {
    weft_callback *h;
    ASSERT_EQ(weft_runtime_call_at(rt, weft_now_ns() + 3600 * 1000 * MS, count_ran, NULL, i & 1 ? &h : NULL), 0);
    if (i & 1) weft_callback_release(h);
  }
  int ran = atomic_load(&cb_ran);
  ASSERT_EQ(weft_runtime_shutdown(rt), 0);
  ASSERT_EQ(atomic_load(&cb_ran), ran);
}

/* A callback that queues itself again with call_soon does not starve the
 * tasks (asyncio runs it again at the next loop iteration). */
static _Atomic int requeues, requeue_stop;
static void requeue_cb(void *arg) {
  atomic_fetch_add(&requeues, 1);
  if (!atomic_load(&requeue_stop)) weft_call_soon(requeue_cb, arg, NULL); /* forever, until stopped */
}

static int requeue_main(void *arg) {
  (void)arg;
  atomic_store(&requeues, 0);
  atomic_store(&requeue_stop, 0);
  weft_pin();
  ASSERT_EQ(weft_call_soon(requeue_cb, NULL, NULL), 0);
  for (int i = 0; i < 20; i++) ASSERT_EQ(weft_sleep_ns(1 * MS), 0); /* keeps running meanwhile */
  ASSERT_TRUE(atomic_load(&requeues) >= 1);
  atomic_store(&requeue_stop, 1);
  weft_unpin();
  return 0;
}
TEST(callbacks_requeued_from_a_callback_do_not_starve_tasks) { run_both(requeue_main, NULL); }

/* The same with runtime_call_soon (call_soon_threadsafe from a callback):
 * the drain runs what was queued when it looked, and what a callback
 * queues meanwhile at its next turn, after the worker's tasks. */
static weft_runtime *rq_rt;
static void rt_requeue_cb(void *arg) {
  atomic_fetch_add(&requeues, 1);
  if (!atomic_load(&requeue_stop)) weft_runtime_call_soon(rq_rt, rt_requeue_cb, arg, NULL); /* until stopped */
}

static int rt_requeue_main(void *arg) {
  (void)arg;
  atomic_store(&requeues, 0);
  atomic_store(&requeue_stop, 0);
  ASSERT_EQ(weft_runtime_call_soon(rq_rt, rt_requeue_cb, NULL, NULL), 0);
  for (int i = 0; i < 20; i++) ASSERT_EQ(weft_sleep_ns(1 * MS), 0); /* keeps running meanwhile */
  ASSERT_TRUE(atomic_load(&requeues) >= 1);
  atomic_store(&requeue_stop, 1);
  return 0;
}
TEST_T(runtime_call_soon_requeued_from_a_callback_does_not_starve_tasks, 30) {
  for (unsigned workers = 1; workers <= 2; workers++) {
    weft_config c = {0};
    c.workers = workers;
    ASSERT_EQ(weft_runtime_new(&rq_rt, &c), 0);
    ASSERT_EQ(weft_runtime_call(rq_rt, rt_requeue_main, NULL), 0);
    ASSERT_EQ(weft_runtime_shutdown(rq_rt), 0);
  }
}

/* ------------------------------------------------------------ task-local values */

static weft_taskvar var_a, var_b;

static int child_sees(void *arg) {
  (void)arg;
  if (weft_taskvar_get(&var_a) != (void *)1) return -EPROTO; /* inherited */
  if (weft_taskvar_get(&var_b) != (void *)50) return -EPROTO; /* default */
  weft_taskvar_set(&var_a, (void *)2, NULL); /* its own copy */
  weft_taskvar_set(&var_b, (void *)3, NULL);
  if (weft_taskvar_get(&var_a) != (void *)2) return -EPROTO;
  weft_sleep_ns(1 * MS); /* (resumes anywhere: the values are the task's) */
  if (weft_taskvar_get(&var_a) != (void *)2 || weft_taskvar_get(&var_b) != (void *)3) return -EPROTO;
  return 0;
}

static int grandchild_chain(void *arg) {
  int depth = (int)(intptr_t)arg;
  if (weft_taskvar_get(&var_a) != (void *)(intptr_t)(100 + depth)) return -EPROTO;
  if (depth == 5) return 0;
  weft_taskvar_set(&var_a, (void *)(intptr_t)(101 + depth), NULL);
  weft_task t = weft_spawn(grandchild_chain, (void *)(intptr_t)(depth + 1));
  int rc = weft_join(t);
  weft_task_release(t);
  if (weft_taskvar_get(&var_a) != (void *)(intptr_t)(101 + depth)) return -EPROTO;
  return rc;
}

static int taskvar_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_taskvar_get(&var_a), (void *)0);
  void *old = (void *)9;
  ASSERT_EQ(weft_taskvar_set(&var_a, (void *)1, &old), 0);
  ASSERT_PTR_EQ(old, NULL);
  weft_task ts[20];
  for (int i = 0; i < 20; i++) ts[i] = weft_spawn(child_sees, NULL);
  for (int i = 0; i < 20; i++) {
    ASSERT_EQ(weft_join(ts[i]), 0);
    weft_task_release(ts[i]);
  }
  ASSERT_EQ(weft_taskvar_get(&var_a), (void *)1); /* children's sets never show here */
  ASSERT_EQ(weft_taskvar_get(&var_b), (void *)50);
  ASSERT_EQ(weft_taskvar_set(&var_a, (void *)100, &old), 0);
  ASSERT_PTR_EQ(old, (void *)1);
  weft_task t = weft_spawn(grandchild_chain, (void *)0);
  ASSERT_EQ(weft_join(t), 0);
  weft_task_release(t);
  weft_taskvar bad = {0, NULL};
  ASSERT_EQ(weft_taskvar_set(&bad, NULL, NULL), -EINVAL);
  ASSERT_PTR_EQ(weft_taskvar_get(NULL), NULL); /* read through NULL before */
  return 0;
}
TEST(taskvars_inherited_as_a_copy) {
  weft_taskvar_init(&var_a, NULL);
  weft_taskvar_init(&var_b, (void *)50);
  ASSERT_EQ(weft_taskvar_get(&var_b), (void *)50);              /* outside a task: the default */
  ASSERT_EQ(weft_taskvar_set(&var_b, NULL, NULL), -EINVAL);     /* outside a task */
  run_both(taskvar_main, NULL);
}

/* A callback runs with the values of whoever scheduled it, as they were
 * then (asyncio: call_soon copies the current context), and a task it
 * spawns starts with them; a later set in the scheduler is not seen. */
static _Atomic intptr_t cb_seen[4];
static _Atomic int cb_child_status = 1;
static int cb_child(void *arg) {
  (void)arg;
  atomic_store(&cb_child_status, weft_taskvar_get(&var_a) == (void *)7 ? 0 : -EPROTO);
  return 0;
}
static void cb_reads(void *arg) {
  int slot = (int)(intptr_t)arg;
  atomic_store(&cb_seen[slot], (intptr_t)weft_taskvar_get(&var_a));
  if (slot == 0) {
    weft_task t = weft_spawn(cb_child, NULL);
    weft_task_release(t);
  }
}
static int cb_ctx_thread_fn(void *arg) { /* a pool thread: the caller's values */
  return weft_runtime_call_soon(arg, cb_reads, (void *)(intptr_t)3, NULL);
}
static weft_runtime *cb_ctx_rt;
static int cb_ctx_main(void *arg) {
  (void)arg;
  ASSERT_EQ(weft_taskvar_set(&var_a, (void *)7, NULL), 0);
  ASSERT_EQ(weft_call_soon(cb_reads, (void *)0, NULL), 0);
  ASSERT_EQ(weft_call_later(2 * MS, cb_reads, (void *)1, NULL), 0);
  ASSERT_EQ(weft_taskvar_set(&var_a, (void *)8, NULL), 0); /* after scheduling: not seen */
  ASSERT_EQ(weft_to_thread(cb_ctx_thread_fn, cb_ctx_rt), 0);
  for (int i = 0; i < 2000 && (!atomic_load(&cb_seen[1]) || !atomic_load(&cb_seen[3]) || atomic_load(&cb_child_status) == 1); i++)
    weft_sleep_ns(MS);
  ASSERT_EQ(atomic_load(&cb_seen[0]), 7);
  ASSERT_EQ(atomic_load(&cb_seen[1]), 7);
  ASSERT_EQ(atomic_load(&cb_seen[3]), 8); /* the to_thread caller's value at the call */
  ASSERT_EQ(atomic_load(&cb_child_status), 0);
  return 0;
}
static void cb_outside(void *arg) { atomic_store(&cb_seen[2], (intptr_t)weft_taskvar_get(&var_b) + 1); }
TEST(a_callback_runs_with_its_schedulers_task_local_values) {
  weft_taskvar_init(&var_a, NULL);
  weft_taskvar_init(&var_b, (void *)50);
  weft_config c = {.workers = 2};
  ASSERT_EQ(weft_runtime_new(&cb_ctx_rt, &c), 0);
  ASSERT_EQ(weft_runtime_call(cb_ctx_rt, cb_ctx_main, NULL), 0);
  /* from a plain thread: no values, the defaults */
  ASSERT_EQ(weft_runtime_call_soon(cb_ctx_rt, cb_outside, NULL, NULL), 0);
  for (int i = 0; i < 2000 && !atomic_load(&cb_seen[2]); i++) usleep(1000);
  ASSERT_EQ(atomic_load(&cb_seen[2]), 51);
  ASSERT_EQ(weft_runtime_shutdown(cb_ctx_rt), 0);
}

/* A task's done callback runs on the finishing thread: on the ended task's
 * own stack when it ends on its own, on its joiner's when it was joined
 * inline. Either way it is not in a task: a set there must fail, and must
 * neither change the joiner's values nor outlive the task with its record
 * (a later task spawned without values, here into the same record, the
 * worker's magazine being LIFO, must see the defaults). */
static weft_taskvar dcb_var;
static _Atomic int dcb_set_rc = 1;
static void dcb_sets(weft_task t, void *arg) {
  (void)t;
  (void)arg;
  atomic_store(&dcb_set_rc, weft_taskvar_set(&dcb_var, (void *)77, NULL));
}
static int dcb_ender(void *arg) {
  (void)arg;
  return weft_task_add_done_callback(weft_current(), dcb_sets, NULL);
}
static int dcb_reader(void *arg) {
  (void)arg;
  return weft_taskvar_get(&dcb_var) == NULL ? 0 : -EPROTO;
}
static int dcb_main(void *arg) {
  (void)arg;
  for (int i = 0; i < 50; i++) {
    atomic_store(&dcb_set_rc, 1);
    weft_task e = weft_spawn(dcb_ender, NULL);
    if (i & 1) weft_sleep_ns(MS / 10); /* it ends on its own stack; else joined inline */
    ASSERT_EQ(weft_join(e), 0);
    weft_task_release(e);
    for (int k = 0; k < 1000 && atomic_load(&dcb_set_rc) == 1; k++) weft_sleep_ns(MS / 10);
    ASSERT_PTR_EQ(weft_taskvar_get(&dcb_var), NULL); /* not the joiner's value */
    weft_task r = weft_spawn(dcb_reader, NULL);
    ASSERT_EQ(weft_join(r), 0); /* nor a later task's */
    weft_task_release(r);
    ASSERT_EQ(atomic_load(&dcb_set_rc), -EINVAL); /* not in a task any more */
  }
  return 0;
}
TEST(a_set_in_a_done_callback_changes_no_task) {
  weft_taskvar_init(&dcb_var, NULL);
  run_both(dcb_main, NULL);
}

/* A done callback, of a task or of a future, runs with the values of
 * whoever added it, as they were then (asyncio: add_done_callback runs it
 * in a copy of the current context), not with those of the task whose
 * stack or thread it runs on: a future's callback run by the task that
 * completes it must neither see that task's values nor change them (a set
 * fails, as in any callback). */
static weft_taskvar acb_var;
static _Atomic intptr_t acb_seen[2];
static _Atomic int acb_set_rc = 1;
static void acb_future_cb(weft_future *f, void *arg) {
  (void)f;
  (void)arg;
  atomic_store(&acb_seen[0], (intptr_t)weft_taskvar_get(&acb_var));
  atomic_store(&acb_set_rc, weft_taskvar_set(&acb_var, (void *)99, NULL));
}
static void acb_task_cb(weft_task t, void *arg) {
  (void)t;
  (void)arg;
  atomic_store(&acb_seen[1], (intptr_t)weft_taskvar_get(&acb_var));
}
static int acb_completer(void *arg) {
  ASSERT_EQ(weft_taskvar_set(&acb_var, (void *)22, NULL), 0);
  ASSERT_EQ(weft_future_set(arg, 0, NULL), 0); /* runs the callback here, in this task */
  return weft_taskvar_get(&acb_var) == (void *)22 ? 0 : -EPROTO; /* its own value, unchanged */
}
static int acb_child(void *arg) {
  (void)arg;
  return weft_taskvar_set(&acb_var, (void *)5, NULL);
}
static int acb_main(void *arg) {
  (void)arg;
  weft_future f;
  ASSERT_EQ(weft_future_init(&f), 0);
  atomic_store(&acb_set_rc, 1);
  atomic_store(&acb_seen[0], 0);
  atomic_store(&acb_seen[1], 0);
  ASSERT_EQ(weft_taskvar_set(&acb_var, (void *)8, NULL), 0);
  ASSERT_EQ(weft_future_add_done_callback(&f, acb_future_cb, NULL), 0);
  ASSERT_EQ(weft_taskvar_set(&acb_var, (void *)9, NULL), 0); /* after adding: not seen */
  weft_task c = weft_spawn(acb_completer, &f);
  ASSERT_EQ(weft_join(c), 0);
  weft_task_release(c);
  ASSERT_EQ(atomic_load(&acb_seen[0]), 8);
  ASSERT_EQ(atomic_load(&acb_set_rc), -EINVAL);
  ASSERT_EQ(weft_future_destroy(&f), 0);
  ASSERT_EQ(weft_taskvar_set(&acb_var, (void *)7, NULL), 0);
  weft_task t = weft_spawn(acb_child, NULL);
  ASSERT_EQ(weft_task_add_done_callback(t, acb_task_cb, NULL), 0);
  ASSERT_EQ(weft_join(t), 0);
  for (int k = 0; k < 1000 && atomic_load(&acb_seen[1]) == 0; k++) weft_sleep_ns(MS / 10);
  ASSERT_EQ(atomic_load(&acb_seen[1]), 7); /* the adder's, not the ended task's (5) nor the default */
  weft_task_release(t);
  ASSERT_PTR_EQ(weft_taskvar_get(&acb_var), (void *)7);
  return 0;
}
TEST(a_done_callback_runs_with_its_adders_task_local_values) {
  weft_taskvar_init(&acb_var, (void *)1);
  run_both(acb_main, NULL);
}

/* ------------------------------------------------------------ introspection */

static weft_future intro_f;
static int awaits_future(void *arg) {
  (void)arg;
  return weft_future_await(&intro_f, NULL);
}

static weft_event intro_ev;
static int awaits_event(void *arg) {
  (void)arg;
  return weft_event_wait(&intro_ev);
}

static weft_lock intro_lock;
static int awaits_lock(void *arg) {
  (void)arg;
  int rc = weft_lock_acquire(&intro_lock);
  if (rc == 0) weft_lock_release(&intro_lock);
  return rc;
}

static weft_sem intro_sem;
static int awaits_sem(void *arg) {
  (void)arg;
  return weft_sem_acquire(&intro_sem);
}

static int intro_pipe[2];
static int awaits_read(void *arg) {
  (void)arg;
  char c;
  return (int)weft_read(intro_pipe[0], &c, 1);
}

static int intro_block_fd = -1;
static int blocking_read(void *arg) {
  (void)arg;
  char c;
  return (int)read(intro_block_fd, &c, 1); /* blocks a pool thread until the write */
}
static int awaits_thread(void *arg) {
  (void)arg;
  return weft_to_thread(blocking_read, NULL);
}

static int intro_main(void *arg) {
  (void)arg;
  weft_future_init(&intro_f);
  weft_event_init(&intro_ev);
  weft_lock_init(&intro_lock);
  ASSERT_EQ(weft_sem_init(&intro_sem, 0), 0);
  ASSERT_EQ(pipe2(intro_pipe, O_CLOEXEC), 0);
  int thread_pipe[2];
  ASSERT_EQ(pipe2(thread_pipe, O_CLOEXEC), 0);
  intro_block_fd = thread_pipe[0];
  ASSERT_EQ(weft_lock_acquire(&intro_lock), 0);
  weft_task lk = weft_spawn(awaits_lock, NULL);
  weft_task sm = weft_spawn(awaits_sem, NULL);
  weft_task rd = weft_spawn(awaits_read, NULL);
  weft_task th = weft_spawn(awaits_thread, NULL);
  weft_task e = weft_spawn(awaits_event, NULL);
  weft_spawn_opts o = {.name = "sleepy"};
  weft_task s = weft_spawn_ex(tu_forever, NULL, &o);
  o.name = "future-waiter";
  weft_task f = weft_spawn_ex(awaits_future, NULL, &o);
  weft_task j = weft_spawn(tu_return_arg, NULL);
  /* until each has reached its wait (5 ms was not always enough on a
   * loaded machine: a fresh clone's TSan run saw "" for one of them) */
  weft_task all[] = {s, f, e, lk, sm, rd, th};
  for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
    for (int i = 0; i < 5000 && weft_task_waiting_on(all[k])[0] == 0; i++) weft_sleep_ns(1 * MS);
  ASSERT_STR_EQ(weft_task_waiting_on(s), "sleep");
  ASSERT_STR_EQ(weft_task_waiting_on(f), "future");
  ASSERT_STR_EQ(weft_task_waiting_on(e), "event");
  ASSERT_STR_EQ(weft_task_waiting_on(lk), "lock");
  ASSERT_STR_EQ(weft_task_waiting_on(sm), "semaphore");
  ASSERT_STR_EQ(weft_task_waiting_on(rd), "io");
  ASSERT_STR_EQ(weft_task_waiting_on(th), "to_thread");
  ASSERT_STR_EQ(weft_task_waiting_on(weft_current()), ""); /* running */
  ASSERT_EQ(weft_lock_release(&intro_lock), 0);
  ASSERT_EQ(weft_join(lk), 0);
  weft_sem_release(&intro_sem);
  ASSERT_EQ(weft_join(sm), 0);
  ASSERT_EQ(write(intro_pipe[1], "x", 1), 1);
  ASSERT_EQ(weft_join(rd), 1);
  ASSERT_EQ(write(thread_pipe[1], "y", 1), 1);
  ASSERT_EQ(weft_join(th), 1);
  weft_task_release(lk);
  weft_task_release(sm);
  weft_task_release(rd);
  weft_task_release(th);
  close(intro_pipe[0]);
  close(intro_pipe[1]);
  close(thread_pipe[0]);
  close(thread_pipe[1]);
  weft_sem_destroy(&intro_sem);
  weft_lock_destroy(&intro_lock);
  weft_task_info info[16];
  int n = weft_tasks(info, 16);
  ASSERT_TRUE(n >= 3);
  int found = 0;
  for (int i = 0; i < n && i < 16; i++)
    if (strcmp(info[i].name, "sleepy") == 0) {
      ASSERT_STR_EQ(info[i].waiting_on, "sleep");
      found = 1;
    }
  ASSERT_TRUE(found);
  /* a dump names them */
  char path[] = "/tmp/weft-dump-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_TRUE(fd >= 0);
  unlink(path);
  ASSERT_TRUE(weft_tasks_dump(fd) >= 3);
  char buf[4096] = {0};
  ASSERT_TRUE(pread(fd, buf, sizeof buf - 1, 0) > 0);
  close(fd);
  ASSERT_TRUE(strstr(buf, "sleepy") && strstr(buf, "waiting on: sleep"));
  ASSERT_TRUE(strstr(buf, "future-waiter") && strstr(buf, "waiting on: future"));
  ASSERT_EQ(weft_tasks_dump(-1), -EINVAL);
  /* a descriptor that takes no writes: its error, not a count (a dump
   * that went nowhere returned the count before) */
  ASSERT_EQ(weft_tasks_dump(1 << 20), -EBADF); /* never open */
  int ro = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_TRUE(ro >= 0);
  ASSERT_EQ(weft_tasks_dump(ro), -EBADF);
  close(ro);
  weft_event_set(&intro_ev);
  weft_join(e);
  weft_task_release(e);
  weft_cancel(s);
  weft_future_set(&intro_f, 0, NULL);
  weft_join(s);
  weft_join(f);
  weft_join(j);
  weft_task_release(s);
  weft_task_release(f);
  weft_task_release(j);
  ASSERT_STR_EQ(weft_task_waiting_on(s), ""); /* a freed handle */
  return 0;
}
TEST(introspection_waiting_on_and_dump) {
  ASSERT_EQ(weft_tasks_dump(1), -EINVAL); /* outside a task */
  run_both(intro_main, NULL);
}

/* debug mode prints the dump on SIGQUIT (from the monitor thread) */
static int sigquit_main(void *arg) {
  (void)arg;
  weft_spawn_opts o = {.name = "quit-sleeper"};
  weft_task s = weft_spawn_ex(tu_forever, NULL, &o);
  weft_sleep_ns(2 * MS);
  kill(getpid(), SIGQUIT);
  weft_sleep_ns(200 * MS); /* the monitor samples every 20 ms */
  weft_cancel(s);
  weft_join(s);
  weft_task_release(s);
  return 0;
}
/* A task that joins a child inline (run on its own stack) waits on that
 * join as any joiner does: introspection says so while the child sleeps,
 * and the listing shows it suspended, not running. */
static weft_task ij_joiner;
static _Atomic int ij_child_sleeping;
static int ij_child(void *arg) {
  (void)arg;
  atomic_store(&ij_child_sleeping, 1);
  return weft_sleep_ns(50 * MS);
}
static char ij_seen[32];
static int ij_seen_state = -1;
static int ij_observer(void *arg) {
  (void)arg;
  for (int i = 0; i < 5000 && !atomic_load(&ij_child_sleeping); i++) weft_sleep_ns(MS / 10);
  weft_sleep_ns(MS); /* the child parked */
  snprintf(ij_seen, sizeof ij_seen, "%s", weft_task_waiting_on(ij_joiner));
  weft_task_info info[16];
  int n = weft_tasks(info, 16);
  for (int i = 0; i < n && i < 16; i++)
    if (info[i].task.rec == ij_joiner.rec) ij_seen_state = info[i].state;
  return 0;
}
static int ij_main(void *arg) {
  (void)arg;
  ij_joiner = weft_current();
  atomic_store(&ij_child_sleeping, 0);
  ij_seen[0] = 0;
  ij_seen_state = -1;
  weft_task o = weft_spawn(ij_observer, NULL);
  weft_task c = weft_spawn(ij_child, NULL);
  ASSERT_EQ(weft_join(c), 0); /* (on one worker: inline, the child fresh on the spawn stack) */
  ASSERT_EQ(weft_join(o), 0);
  weft_task_release(c);
  weft_task_release(o);
  ASSERT_STR_EQ(ij_seen, "join");
  ASSERT_EQ(ij_seen_state, WEFT_TASK_SUSPENDED);
  return 0;
}
TEST(introspection_an_inline_join_is_waiting_on_join) { run_both(ij_main, NULL); }

/* A dump returns the number of live tasks, also beyond the ones it prints
 * one by one (4096: the rest is summed up as "... and N more"). */
static int waits_event(void *arg) { return weft_event_wait(arg); }
static int many_dump_main(void *arg) {
  (void)arg;
  enum { N = 4200 };
  weft_task *ts = calloc(N, sizeof *ts);
  ASSERT_TRUE(ts != NULL);
  weft_event ev;
  weft_event_init(&ev);
  for (int i = 0; i < N; i++) ts[i] = weft_spawn(waits_event, &ev);
  char path[] = "/tmp/weft-dump-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_TRUE(fd >= 0);
  unlink(path);
  int live = weft_tasks(NULL, 0); /* the children, this task, and the runtime's own (weft_run's SIGINT watch) */
  ASSERT_TRUE(live >= N + 1);
  ASSERT_EQ(weft_tasks_dump(fd), live);
  /* found by review: its first line counted the tasks printed one by one
   * only (4096), not the live ones */
  char head[64] = {0}, want[64];
  ASSERT_TRUE(pread(fd, head, sizeof head - 1, 0) > 0);
  close(fd);
  snprintf(want, sizeof want, "weft: %d live task(s):\n", live);
  if (strncmp(head, want, strlen(want)) != 0) TEST_FAIL("first line %.40s, not %s", head, want);
  weft_event_set(&ev);
  for (int i = 0; i < N; i++) {
    ASSERT_EQ(weft_join(ts[i]), 0);
    weft_task_release(ts[i]);
  }
  free(ts);
  return 0;
}
TEST(introspection_dump_counts_every_live_task) { run_both(many_dump_main, NULL); }

/* found by review: a dump printed no task id (weft/task.h: "id, name,
 * state, ..."), so that tasks of one name could not be told apart */
static int dump_id_main(void *arg) {
  (void)arg;
  weft_event ev;
  weft_event_init(&ev);
  weft_task a = weft_spawn(waits_event, &ev), b = weft_spawn(waits_event, &ev);
  char na[32], nb[32];
  ASSERT_TRUE(weft_task_get_name(a, na, sizeof na) > 5 && weft_task_get_name(b, nb, sizeof nb) > 5);
  ASSERT_TRUE(strncmp(na, "task-", 5) == 0 && strncmp(nb, "task-", 5) == 0); /* the default: the id */
  weft_task_set_name(a, "same-name");
  weft_task_set_name(b, "same-name");
  weft_sleep_ns(MS);
  char path[] = "/tmp/weft-dump-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_TRUE(fd >= 0);
  unlink(path);
  ASSERT_TRUE(weft_tasks_dump(fd) >= 3);
  char buf[8192] = {0};
  ASSERT_TRUE(pread(fd, buf, sizeof buf - 1, 0) > 0);
  close(fd);
  char ida[40], idb[40];
  snprintf(ida, sizeof ida, "#%s ", na + 5);
  snprintf(idb, sizeof idb, "#%s ", nb + 5);
  if (!strstr(buf, ida) || !strstr(buf, idb)) TEST_FAIL("no id %s or %s in: %s", ida, idb, buf);
  weft_event_set(&ev);
  ASSERT_EQ(weft_join(a), 0);
  ASSERT_EQ(weft_join(b), 0);
  weft_task_release(a);
  weft_task_release(b);
  return 0;
}
TEST(introspection_a_dump_prints_task_ids) { run_both(dump_id_main, NULL); }

/* found by review: a name set while another thread read it (a listing, a
 * dump, weft_task_get_name) came out torn, the head of one name and the
 * tail of the other: a name nobody set. */
static const char *const tn_names[2] = {"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"};
static atomic_int tn_stop;
static int tn_setter(void *arg) {
  (void)arg;
  weft_task me = weft_current();
  for (long i = 0; !atomic_load(&tn_stop); i++) {
    weft_task_set_name(me, tn_names[i & 1]);
    if ((i & 1023) == 0) weft_yield();
  }
  return 0;
}
static int tn_is_set(const char *name) { return !strcmp(name, tn_names[0]) || !strcmp(name, tn_names[1]); }
static int torn_name_main(void *arg) {
  (void)arg;
  atomic_store(&tn_stop, 0);
  weft_spawn_opts o = {.name = tn_names[0]};
  weft_task s = weft_spawn_ex(tn_setter, NULL, &o);
  weft_sleep_ns(MS); /* it runs on the other worker */
  int torn = 0;
  char seen[32] = "";
  int64_t end = weft_now_ns() + 200 * MS;
  for (int k = 0; k < 100000 && weft_now_ns() < end; k++) {
    weft_task_info info[16];
    int n = weft_tasks(info, 16);
    for (int i = 0; i < n && i < 16; i++)
      if (info[i].task.rec == s.rec && !tn_is_set(info[i].name)) {
        torn++;
        snprintf(seen, sizeof seen, "%s", info[i].name);
      }
    char name[32];
    ASSERT_EQ(weft_task_get_name(s, name, sizeof name), 31);
    if (!tn_is_set(name)) {
      torn++;
      snprintf(seen, sizeof seen, "%s", name);
    }
    if ((k & 255) == 0) weft_yield();
  }
  atomic_store(&tn_stop, 1);
  ASSERT_EQ(weft_join(s), 0);
  weft_task_release(s);
  if (torn) TEST_FAIL("%d torn name(s), such as '%s'", torn, seen);
  return 0;
}
TEST(introspection_a_name_set_during_a_listing_is_never_torn) {
  weft_config c = {0};
  c.workers = 2;
  ASSERT_EQ(weft_run(torn_name_main, NULL, &c), 0);
}

/* stderr into an unlinked temporary file until stderr_end, which restores
 * it and reads what was written into buf (NUL-terminated). */
typedef struct {
  int fd, saved;
} stderr_capture;
static stderr_capture stderr_begin(void) {
  char path[] = "/tmp/weft-quit-XXXXXX";
  stderr_capture c = {mkstemp(path), dup(2)};
  ASSERT_TRUE(c.fd >= 0 && c.saved >= 0);
  unlink(path);
  fflush(stderr);
  dup2(c.fd, 2);
  return c;
}
static void stderr_end(stderr_capture c, char *buf, size_t len) {
  fflush(stderr);
  dup2(c.saved, 2);
  close(c.saved);
  ssize_t n = pread(c.fd, buf, len - 1, 0);
  close(c.fd);
  buf[n > 0 ? n : 0] = 0;
  ASSERT_TRUE(n > 0);
}

TEST(introspection_sigquit_dump_in_debug_mode) {
  stderr_capture cap = stderr_begin();
  weft_config c = {0};
  c.workers = 2;
  c.debug = 1;
  int rc = weft_run(sigquit_main, NULL, &c);
  char buf[8192];
  stderr_end(cap, buf, sizeof buf);
  ASSERT_EQ(rc, 0);
  if (!strstr(buf, "quit-sleeper")) TEST_FAIL("no dump on SIGQUIT: %s", buf);
  ASSERT_TRUE(strstr(buf, "waiting on: sleep") != NULL);
  /* the default action is back once the debug runtime stopped */
  struct sigaction sa;
  sigaction(SIGQUIT, NULL, &sa);
  ASSERT_TRUE(sa.sa_handler == SIG_DFL);
}

/* Two debug runtimes at once (two threads): one SIGQUIT dumps both. */
static atomic_int quit_ready;
static int sigquit_two_main(void *arg) {
  weft_spawn_opts o = {.name = arg};
  weft_task s = weft_spawn_ex(tu_forever, NULL, &o);
  weft_sleep_ns(2 * MS);
  atomic_fetch_add(&quit_ready, 1);
  if (strcmp(arg, "quit-sleeper-a") == 0) {
    while (atomic_load(&quit_ready) < 2) weft_sleep_ns(MS);
    kill(getpid(), SIGQUIT);
  }
  weft_sleep_ns(300 * MS); /* the monitors sample every 20 ms */
  weft_cancel(s);
  weft_join(s);
  weft_task_release(s);
  return 0;
}
static void *sigquit_two_thread(void *arg) {
  weft_config c = {0};
  c.workers = 1;
  c.debug = 1;
  return (void *)(intptr_t)weft_run(sigquit_two_main, arg, &c);
}
TEST(introspection_sigquit_dumps_every_debug_runtime) {
  stderr_capture cap = stderr_begin();
  atomic_store(&quit_ready, 0);
  pthread_t a, b;
  void *ra, *rb;
  pthread_create(&a, NULL, sigquit_two_thread, "quit-sleeper-a");
  pthread_create(&b, NULL, sigquit_two_thread, "quit-sleeper-b");
  pthread_join(a, &ra);
  pthread_join(b, &rb);
  char buf[16384];
  stderr_end(cap, buf, sizeof buf);
  ASSERT_EQ((int)(intptr_t)ra, 0);
  ASSERT_EQ((int)(intptr_t)rb, 0);
  if (!strstr(buf, "quit-sleeper-a") || !strstr(buf, "quit-sleeper-b")) TEST_FAIL("not both dumped: %s", buf);
  struct sigaction sa;
  sigaction(SIGQUIT, NULL, &sa);
  ASSERT_TRUE(sa.sa_handler == SIG_DFL);
}

/* found by review: a debug runtime's stop put SIGQUIT back to its default
 * action whatever was installed then: a handler the program installed
 * during the run was dropped (process/signal.c keeps one in place of its
 * SIGINT handler) */
static atomic_int quit_user_seen;
static void quit_user_handler(int sig) {
  (void)sig;
  atomic_fetch_add(&quit_user_seen, 1);
}
TEST(introspection_sigquit_a_handler_installed_during_a_debug_run_stays) {
  weft_config c = {0};
  c.workers = 1;
  c.debug = 1;
  weft_runtime *rt;
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  struct sigaction sa, cur;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = quit_user_handler;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGQUIT, &sa, NULL), 0);
  ASSERT_EQ(weft_runtime_shutdown(rt), 0);
  ASSERT_EQ(sigaction(SIGQUIT, NULL, &cur), 0);
  ASSERT_TRUE(cur.sa_handler == quit_user_handler);
  atomic_store(&quit_user_seen, 0);
  kill(getpid(), SIGQUIT);
  ASSERT_EQ(atomic_load(&quit_user_seen), 1);
}

/* ... and a signal watch of another runtime, added over the debug handler,
 * lost its signal when the debug runtime stopped (the process took the
 * default action); once that watch went, it put the debug handler back,
 * which swallowed the signal with no debug runtime left to dump. */
static atomic_int quit_watch_seen;
static int quit_watch_fn(int signo, void *arg) {
  (void)signo;
  (void)arg;
  atomic_fetch_add(&quit_watch_seen, 1);
  return 0;
}
static int quit_watch_add(void *arg) {
  return weft_signal_watch_add(arg, SIGQUIT, quit_watch_fn, NULL);
}
static int quit_watch_kill(void *arg) {
  (void)arg;
  kill(getpid(), SIGQUIT);
  for (int i = 0; i < 2000 && !atomic_load(&quit_watch_seen); i++) weft_sleep_ns(MS);
  return atomic_load(&quit_watch_seen);
}
static int quit_watch_remove(void *arg) { return weft_signal_watch_remove(arg); }
static int quit_watch_child(int progress) {
  struct rlimit nocore = {0, 0};
  setrlimit(RLIMIT_CORE, &nocore);
  weft_config cd = {0}, cp = {0};
  cd.workers = 1;
  cd.debug = 1;
  cp.workers = 1;
  weft_runtime *dbg, *plain;
  if (weft_runtime_new(&dbg, &cd) || weft_runtime_new(&plain, &cp)) return 10;
  weft_signal_watch *w = NULL;
  if (weft_runtime_call(plain, quit_watch_add, &w) != 0) return 11;
  if (weft_runtime_shutdown(dbg) != 0) return 12;
  if (weft_runtime_call(plain, quit_watch_kill, NULL) != 1) return 13; /* the watch got it */
  if (weft_runtime_call(plain, quit_watch_remove, w) != 0) return 14;
  if (write(progress, "w", 1) != 1) return 16; /* (the default action at the first kill also ends it) */
  kill(getpid(), SIGQUIT); /* the default action: the child ends here */
  usleep(200 * 1000);
  return 15;
}
TEST(introspection_sigquit_a_watch_over_the_debug_handler_keeps_its_signal) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t pid = fork();
  ASSERT_TRUE(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    _exit(quit_watch_child(p[1]));
  }
  close(p[1]);
  char c = 0;
  ssize_t got = read(p[0], &c, 1);
  close(p[0]);
  int st;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  if (got != 1) TEST_FAIL("the watch never got the signal (status %#x)", st);
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGQUIT)
    TEST_FAIL("status %#x (exit %d: 15 the signal was swallowed)", st, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

/* ------------------------------------------------------------ found by review: a runtime callback
 * dropped at shutdown (cancel returned 0 before) */

static atomic_int rv_gate2, rv_fn_ran;
static int rv_hog(void *arg) {
  (void)arg;
  for (int i = 0; i < 5000 && !atomic_load(&rv_gate2); i++) usleep(1000); /* holds the only worker */
  return weft_yield(); /* -ECANCELED: shutdown cancelled it */
}
static void rv_fn(void *arg) {
  (void)arg;
  atomic_fetch_add(&rv_fn_ran, 1);
}
static void *rv_shutdown_thread(void *arg) {
  weft_runtime_shutdown(arg);
  return NULL;
}
/* A runtime_call_soon whose callback is dropped at shutdown: it never ran and
 * never will, so weft_callback_cancel must return 1 ("1 when it will not
 * run, 0 when it ran or is running"). */
TEST(runtime_callback_dropped_at_shutdown_cancel_returns_1) {
  weft_config c = {0};
  c.workers = 1;
  weft_runtime *rt;
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  ASSERT_EQ(weft_runtime_submit(rt, rv_hog, NULL, NULL), 0);
  usleep(20000); /* the hog runs */
  weft_callback *h;
  ASSERT_EQ(weft_runtime_call_soon(rt, rv_fn, NULL, &h), 0);
  pthread_t th;
  pthread_create(&th, NULL, rv_shutdown_thread, rt);
  usleep(200000); /* shutdown cancelled every task, the queued submission too */
  atomic_store(&rv_gate2, 1);
  pthread_join(th, NULL);
  ASSERT_EQ(atomic_load(&rv_fn_ran), 0);
  ASSERT_EQ(weft_callback_cancel(h), 1);
  weft_callback_release(h);
}

/* ------------------------------------------------------------ runtime_call_soon order */

/* weft_runtime_call_soon is asyncio's call_soon_threadsafe: the callbacks
 * run one at a time, in the order of the calls, whichever threads made
 * them (a call that happens before another runs first). Each callback
 * checks that it is the next one and that no other runs beside it. */
static _Atomic long fifo_next, fifo_disorder, fifo_overlap, fifo_ran;
static _Atomic int fifo_inside;
static void fifo_cb(void *arg) {
  if (atomic_exchange(&fifo_inside, 1)) atomic_fetch_add(&fifo_overlap, 1);
  long i = (long)(intptr_t)arg;
  if (atomic_load_explicit(&fifo_next, memory_order_relaxed) != i) atomic_fetch_add(&fifo_disorder, 1);
  atomic_store_explicit(&fifo_next, i + 1, memory_order_relaxed);
  atomic_store(&fifo_inside, 0);
  atomic_fetch_add(&fifo_ran, 1);
}
static void fifo_reset(void) {
  atomic_store(&fifo_next, 0);
  atomic_store(&fifo_disorder, 0);
  atomic_store(&fifo_overlap, 0);
  atomic_store(&fifo_ran, 0);
}
/* keep every worker busy now and then, so that the calls' paths differ */
static _Atomic int fifo_stop;
static int fifo_churn(void *arg) {
  (void)arg;
  while (!atomic_load(&fifo_stop)) {
    spin_ns(20000);
    if (weft_yield() < 0) break;
  }
  return 0;
}

TEST_T(runtime_call_soon_runs_in_call_order_one_at_a_time, 60) {
  long n = tu_iters(20000);
  for (int round = 0; round < 2; round++) {
    weft_config c = {.workers = 2};
    weft_runtime *rt;
    ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
    fifo_reset();
    atomic_store(&fifo_stop, 0);
    if (round == 1)
      for (int k = 0; k < 2; k++) ASSERT_EQ(weft_runtime_submit(rt, fifo_churn, NULL, NULL), 0);
    for (long i = 0; i < n; i++) {
      ASSERT_EQ(weft_runtime_call_soon(rt, fifo_cb, (void *)(intptr_t)i, NULL), 0);
      if (i % 512 == 0) usleep(50); /* let some drain between calls */
    }
    for (int i = 0; i < 20000 && atomic_load(&fifo_ran) < n; i++) usleep(1000);
    atomic_store(&fifo_stop, 1);
    ASSERT_EQ(weft_runtime_shutdown(rt), 0);
    ASSERT_EQ(atomic_load(&fifo_ran), n);
    ASSERT_EQ(atomic_load(&fifo_overlap), 0);
    ASSERT_EQ(atomic_load(&fifo_disorder), 0);
  }
}

/* Two threads take turns (each call happens before the other thread's
 * next): the callbacks run in that interleaved order. */
static weft_runtime *turn_rt;
static sem_t turn_sem[2];
static long turn_n;
static void *turn_thread(void *arg) {
  int me = (int)(intptr_t)arg;
  for (long i = me; i < turn_n; i += 2) {
    while (sem_wait(&turn_sem[me]) != 0) {
    }
    if (weft_runtime_call_soon(turn_rt, fifo_cb, (void *)(intptr_t)i, NULL) != 0) atomic_fetch_add(&fifo_disorder, 1000000);
    sem_post(&turn_sem[1 - me]);
  }
  return NULL;
}
TEST_T(runtime_call_soon_keeps_the_order_across_threads, 60) {
  turn_n = tu_iters(4000);
  weft_config c = {.workers = 2};
  ASSERT_EQ(weft_runtime_new(&turn_rt, &c), 0);
  fifo_reset();
  sem_init(&turn_sem[0], 0, 1);
  sem_init(&turn_sem[1], 0, 0);
  pthread_t a, b;
  pthread_create(&a, NULL, turn_thread, (void *)0);
  pthread_create(&b, NULL, turn_thread, (void *)1);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  for (int i = 0; i < 20000 && atomic_load(&fifo_ran) < turn_n; i++) usleep(1000);
  ASSERT_EQ(weft_runtime_shutdown(turn_rt), 0);
  ASSERT_EQ(atomic_load(&fifo_ran), turn_n);
  ASSERT_EQ(atomic_load(&fifo_overlap), 0);
  ASSERT_EQ(atomic_load(&fifo_disorder), 0);
}

/* Calls still queued when the runtime shuts down are dropped (cancel says
 * 1), whether or not a worker has started on them; nothing leaks (ASan). */
static int fifo_hog(void *arg) {
  (void)arg;
  while (!atomic_load(&fifo_stop)) spin_ns(100000);
  return weft_yield(); /* -ECANCELED: shutdown cancelled it */
}
static void *fifo_stop_later(void *arg) {
  (void)arg;
  usleep(100000);
  atomic_store(&fifo_stop, 1);
  return NULL;
}
TEST_T(runtime_call_soon_pending_at_shutdown_are_dropped, 30) {
  weft_config c = {.workers = 2};
  weft_runtime *rt;
  ASSERT_EQ(weft_runtime_new(&rt, &c), 0);
  fifo_reset();
  atomic_store(&fifo_stop, 0);
  for (int k = 0; k < 2; k++) ASSERT_EQ(weft_runtime_submit(rt, fifo_hog, NULL, NULL), 0);
  usleep(20000); /* both workers run a hog */
  enum { N = 100 };
  weft_callback *h[N];
  for (long i = 0; i < N; i++) ASSERT_EQ(weft_runtime_call_soon(rt, fifo_cb, (void *)(intptr_t)i, &h[i]), 0);
  ASSERT_EQ(weft_callback_cancel(h[N / 2]), 1);
  pthread_t th;
  pthread_create(&th, NULL, fifo_stop_later, NULL);
  ASSERT_EQ(weft_runtime_shutdown(rt), 0);
  pthread_join(th, NULL);
  long ran = atomic_load(&fifo_ran), cancelled = 0;
  for (long i = 0; i < N; i++) {
    cancelled += weft_callback_cancel(h[i]) == 1;
    weft_callback_release(h[i]);
  }
  ASSERT_EQ(ran + cancelled, N - 1); /* every one ran or says it will not (the cancelled one said so) */
  ASSERT_EQ(atomic_load(&fifo_overlap), 0);
}

/* ------------------------------------------------------------ racing a shutdown */

/* weft_runtime_call_soon may race with the start of weft_runtime_shutdown
 * (as weft_runtime_submit may: weft/core.h). Here the caller is held right
 * after its submission, at `*out = h` (a write to a page it cannot write
 * yet: a stand-in for being preempted there), while another thread shuts
 * the runtime down. The call must still end safely; today it goes on to
 * subscribe to and release the submitted task's record, which the shutdown
 * has unmapped meanwhile (SIGSEGV). */
static char *guard_page;
static sem_t fault_seen, fault_release;
static atomic_int shutdown_returned;
static weft_runtime *race_rt;

static void segv_handler(int sig, siginfo_t *si, void *ctx) {
  (void)ctx;
  if ((char *)si->si_addr < guard_page || (char *)si->si_addr >= guard_page + 4096) {
    signal(sig, SIG_DFL);
    return; /* a real crash: re-raised with the default action */
  }
  sem_post(&fault_seen);
  while (sem_wait(&fault_release) != 0) {
  }
  mprotect(guard_page, 4096, PROT_READ | PROT_WRITE);
}

static void race_noop_cb(void *arg) { (void)arg; }

static void *caller_thread(void *arg) {
  (void)arg;
  weft_callback **out = (weft_callback **)(void *)guard_page;
  int rc = weft_runtime_call_soon(race_rt, race_noop_cb, NULL, out);
  if (rc == 0) weft_callback_release(*out);
  return (void *)(intptr_t)rc;
}

static void *shutdown_thread(void *arg) {
  (void)arg;
  weft_runtime_shutdown(race_rt);
  atomic_store(&shutdown_returned, 1);
  return NULL;
}

TEST_T(a_runtime_call_soon_racing_a_shutdown_is_waited_for, 30) {
  guard_page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_TRUE(guard_page != MAP_FAILED);
  sem_init(&fault_seen, 0, 0);
  sem_init(&fault_release, 0, 0);
  struct sigaction sa = {0};
  sa.sa_sigaction = segv_handler;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, NULL);
  weft_config c = {.workers = 2};
  ASSERT_EQ(weft_runtime_new(&race_rt, &c), 0);
  pthread_t a, s;
  pthread_create(&a, NULL, caller_thread, NULL);
  while (sem_wait(&fault_seen) != 0) {
  }
  /* the call is in progress: its submission was accepted */
  pthread_create(&s, NULL, shutdown_thread, NULL);
  usleep(200000); /* let the shutdown finish if it does not wait for the call */
  sem_post(&fault_release);
  void *rc;
  pthread_join(a, &rc);
  pthread_join(s, NULL);
  ASSERT_EQ((intptr_t)rc, 0);
  ASSERT_EQ(atomic_load(&shutdown_returned), 1);
}

TEST_MAIN()
