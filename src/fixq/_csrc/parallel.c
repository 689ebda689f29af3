/* fixq__parallel: the worker threads behind `threads=N`.
 *
 * Workers are started on first use and kept: a pthread_create + join costs
 * 20-40 us on a virtual machine, about a tenth of a 128x1024x1024 GEMM.
 * Tasks are claimed, not assigned: the caller claims them like any worker,
 * so a worker that is slow to wake costs the call nothing but its share.  One atomic word holds the region number, its task
 * count and the next task to claim, so a claim is only ever made on the
 * region it names; fn and ctx stay put until every claimed task is done.
 * Between regions a worker polls for SPIN_NS before it sleeps on a condition
 * variable, so back-to-back calls (a model's layers, a benchmark loop) find
 * it awake.
 *
 * One region runs on the pool at a time; a caller that finds it busy (another
 * thread's region) starts threads of its own.  A task is never dropped: what
 * no thread takes, the caller runs.  fork() waits for a running region; the
 * child starts with no workers (they do not survive the fork) and makes new
 * ones on demand. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "fixq_internal.h"

#define POOL_MAX 63          /* workers kept (the task count and index fit 8 bits) */
#define SPIN_NS 100000       /* poll this long for the next region before sleeping */

static struct {
  pthread_mutex_t busy;      /* held by the caller running a region */
  pthread_mutex_t m;         /* with wake / done: sleeping and waking */
  pthread_cond_t wake, done;
  int workers, sleepers;     /* workers: started (under busy); sleepers: under m */
  uint64_t word;             /* atomic: region number << 16 | task count << 8 | next task */
  int finished;              /* atomic: tasks of this region run to the end */
  fixq__task_fn fn;
  void *ctx;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, NULL, NULL};

static void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Polls (then sleeps) until the region number differs from `seen`; returns the new one. */
static uint64_t next_region(uint64_t seen) {
  const uint64_t start = now_ns();
  for (unsigned i = 1;; i++) {
    const uint64_t r = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE) >> 16;
    if (r != seen) return r;
    if (i % 64 == 0 && now_ns() - start > SPIN_NS) break;
    relax();
  }
  pthread_mutex_lock(&pool.m);
  pool.sleepers++;
  uint64_t r;
  while ((r = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE) >> 16) == seen) pthread_cond_wait(&pool.wake, &pool.m);
  pool.sleepers--;
  pthread_mutex_unlock(&pool.m);
  return r;
}

/* Claims and runs tasks of region `region` until none is left; returns how many it ran. */
static int run_claimed(uint64_t region) {
  int ran = 0;
  uint64_t w = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE);
  for (;;) {
    if (w >> 16 != region || (w & 0xFF) >= (w >> 8 & 0xFF)) return ran;
    if (!__atomic_compare_exchange_n(&pool.word, &w, w + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
    pool.fn(pool.ctx, (int)(w & 0xFF));
    ran++;
    w = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE);
  }
}

static void *worker(void *arg) {
  uint64_t seen = (uint64_t)(uintptr_t)arg; /* the region number when it was started */
  for (;;) {
    seen = next_region(seen);
    const int ran = run_claimed(seen);
    if (ran > 0 && __atomic_sub_fetch(&pool.finished, ran, __ATOMIC_ACQ_REL) == 0) {
      pthread_mutex_lock(&pool.m);
      pthread_cond_signal(&pool.done);
      pthread_mutex_unlock(&pool.m);
    }
  }
  return NULL;
}

typedef struct {
  fixq__task_fn fn;
  void *ctx;
  int t;
} spawned_task;

static void *run_one(void *arg) {
  const spawned_task *s = arg;
  s->fn(s->ctx, s->t);
  return NULL;
}

/* Tasks [first, n) on threads of their own, task `first` on the caller's
 * (and any whose thread does not start). */
static void run_spawned(int first, int n, fixq__task_fn fn, void *ctx) {
  spawned_task *s = malloc(sizeof(spawned_task) * (size_t)(n - first));
  pthread_t *tid = malloc(sizeof(pthread_t) * (size_t)(n - first));
  int *started = calloc((size_t)(n - first), sizeof(int));
  if (s == NULL || tid == NULL || started == NULL) {
    for (int t = first; t < n; t++) fn(ctx, t);
  } else {
    for (int i = 1; i < n - first; i++) {
      s[i] = (spawned_task){fn, ctx, first + i};
      started[i] = pthread_create(&tid[i], NULL, run_one, &s[i]) == 0;
    }
    fn(ctx, first);
    for (int i = 1; i < n - first; i++) {
      if (started[i]) pthread_join(tid[i], NULL);
      else fn(ctx, first + i);
    }
  }
  free(s);
  free(tid);
  free(started);
}

static void fork_prepare(void) { pthread_mutex_lock(&pool.busy); }
static void fork_parent(void) { pthread_mutex_unlock(&pool.busy); }
static void fork_child(void) {
  /* only the forking thread exists here; it holds busy (fork_prepare) */
  pthread_mutex_init(&pool.m, NULL);
  pthread_cond_init(&pool.wake, NULL);
  pthread_cond_init(&pool.done, NULL);
  pool.workers = pool.sleepers = 0;
  pthread_mutex_unlock(&pool.busy);
}

/* One more worker, detached (it runs until the process ends). */
static int start_worker(void) {
  pthread_t tid;
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0) return 0;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  const uint64_t region = pool.word >> 16; /* it changes only under busy, as here */
  const int ok = pthread_create(&tid, &attr, worker, (void *)(uintptr_t)region) == 0;
  pthread_attr_destroy(&attr);
  return ok;
}

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static void pool_init(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

void fixq__parallel(int n, fixq__task_fn fn, void *ctx) {
  if (n <= 1) {
    if (n == 1) fn(ctx, 0);
    return;
  }
  pthread_once(&pool_once, pool_init);
  if (pthread_mutex_trylock(&pool.busy) != 0) { /* another thread's region */
    run_spawned(0, n, fn, ctx);
    return;
  }
  const int want = n - 1 < POOL_MAX ? n - 1 : POOL_MAX;
  if (pool.workers < want) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the workers inherit it: signals go to the application's threads */
    while (pool.workers < want && start_worker()) pool.workers++;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  const int extra = n - 1 > pool.workers ? n - 1 - pool.workers : 0; /* past the pool, or workers that did not start */
  n -= extra;
  pool.fn = fn;
  pool.ctx = ctx;
  __atomic_store_n(&pool.finished, n, __ATOMIC_RELAXED);
  const uint64_t region = (__atomic_load_n(&pool.word, __ATOMIC_RELAXED) >> 16) + 1;
  __atomic_store_n(&pool.word, region << 16 | (uint64_t)n << 8, __ATOMIC_RELEASE);
  pthread_mutex_lock(&pool.m);
  if (pool.sleepers > 0) pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.m);
  if (extra > 0) run_spawned(n, n + extra, fn, ctx); /* threads of their own */
  const int mine = run_claimed(region);
  if (mine > 0) __atomic_sub_fetch(&pool.finished, mine, __ATOMIC_ACQ_REL);
  const uint64_t start = now_ns();
  for (unsigned i = 1; __atomic_load_n(&pool.finished, __ATOMIC_ACQUIRE) > 0; i++) {
    if (i % 64 == 0 && now_ns() - start > SPIN_NS) {
      pthread_mutex_lock(&pool.m);
      while (__atomic_load_n(&pool.finished, __ATOMIC_ACQUIRE) > 0) pthread_cond_wait(&pool.done, &pool.m);
      pthread_mutex_unlock(&pool.m);
      break;
    }
    relax();
  }
  pthread_mutex_unlock(&pool.busy);
}
