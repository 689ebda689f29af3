/* fixq__parallel: the worker threads behind `threads=N`.
 *
 * Workers are started on first use and kept: a pthread_create + join costs
 * 20-40 us on a virtual machine, about a tenth of a 128x1024x1024 GEMM.  A
 * region is published as one atomic word (region number, task count), so a
 * worker decides whether it has a task from a consistent view; the fields it
 * then reads (fn, ctx) stay put until every needed worker has counted itself
 * done.  Between regions a worker polls for SPIN_NS before it sleeps on a
 * condition variable, so back-to-back calls (a model's layers, a benchmark
 * loop) start without a wake-up.
 *
 * One region runs on the pool at a time; a caller that finds it busy (another
 * thread's region) starts threads of its own, as does a caller whose workers
 * cannot be started.  A task is never dropped: what no thread takes, the
 * caller runs.  fork() waits for a running region; the child starts with no
 * workers (they do not survive the fork) and makes new ones on demand. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "fixq_internal.h"

#define POOL_MAX 63          /* workers kept; a larger request starts threads for the rest */
#define SPIN_NS 100000       /* poll this long for the next region before sleeping */

static struct {
  pthread_mutex_t busy;      /* held by the caller running a region */
  pthread_mutex_t m;         /* with wake / done: sleeping and waking */
  pthread_cond_t wake, done;
  int workers, sleepers;     /* workers: started (under busy); sleepers: under m */
  uint64_t region;           /* atomic: region number << 8 | worker tasks in it */
  int pending;               /* atomic: worker tasks of this region not finished */
  uint64_t first_seen[POOL_MAX]; /* the region word when worker w started */
  fixq__task_fn fn;
  void *ctx;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, {0}, NULL, NULL};

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

/* Polls (then sleeps) until the region word differs from `seen`. */
static uint64_t next_region(uint64_t seen) {
  const uint64_t start = now_ns();
  for (unsigned i = 1;; i++) {
    const uint64_t r = __atomic_load_n(&pool.region, __ATOMIC_ACQUIRE);
    if (r != seen) return r;
    if (i % 64 == 0 && now_ns() - start > SPIN_NS) break;
    relax();
  }
  pthread_mutex_lock(&pool.m);
  pool.sleepers++;
  uint64_t r;
  while ((r = __atomic_load_n(&pool.region, __ATOMIC_ACQUIRE)) == seen) pthread_cond_wait(&pool.wake, &pool.m);
  pool.sleepers--;
  pthread_mutex_unlock(&pool.m);
  return r;
}

/* Worker w runs task w + 1 of each region that has that many worker tasks. */
static void *worker(void *arg) {
  const int w = (int)(intptr_t)arg;
  uint64_t seen = pool.first_seen[w]; /* written before pthread_create */
  for (;;) {
    seen = next_region(seen);
    if ((int)(seen & 0xFF) <= w) continue;
    pool.fn(pool.ctx, w + 1);
    if (__atomic_sub_fetch(&pool.pending, 1, __ATOMIC_ACQ_REL) == 0) {
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

/* Worker number pool.workers, detached (it runs until the process ends). */
static int start_worker(void) {
  pthread_t tid;
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0) return 0;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pool.first_seen[pool.workers] = pool.region; /* it changes only under busy, as here */
  const int ok = pthread_create(&tid, &attr, worker, (void *)(intptr_t)pool.workers) == 0;
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
  const int tasks = want < pool.workers ? want : pool.workers; /* tasks 1..tasks on the workers */
  pool.fn = fn;
  pool.ctx = ctx;
  __atomic_store_n(&pool.pending, tasks, __ATOMIC_RELAXED);
  const uint64_t region = __atomic_load_n(&pool.region, __ATOMIC_RELAXED);
  __atomic_store_n(&pool.region, ((region >> 8) + 1) << 8 | (uint64_t)tasks, __ATOMIC_RELEASE);
  pthread_mutex_lock(&pool.m);
  if (pool.sleepers > 0) pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.m);
  if (tasks + 1 < n) run_spawned(tasks + 1, n, fn, ctx); /* past the pool (or workers that did not start) */
  fn(ctx, 0);
  const uint64_t start = now_ns();
  for (unsigned i = 1; __atomic_load_n(&pool.pending, __ATOMIC_ACQUIRE) > 0; i++) {
    if (i % 64 == 0 && now_ns() - start > SPIN_NS) {
      pthread_mutex_lock(&pool.m);
      while (__atomic_load_n(&pool.pending, __ATOMIC_ACQUIRE) > 0) pthread_cond_wait(&pool.done, &pool.m);
      pthread_mutex_unlock(&pool.m);
      break;
    }
    relax();
  }
  pthread_mutex_unlock(&pool.busy);
}
