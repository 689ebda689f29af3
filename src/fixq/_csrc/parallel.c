/* fixq__parallel: the worker threads behind `threads=N`.
 *
 * Workers are started on first use and kept: a pthread_create + join costs
 * 20-40 us on a virtual machine, about a tenth of a 128x1024x1024 GEMM.
 * Tasks are claimed, not assigned: the caller claims them like any worker,
 * so a worker that is slow to wake costs the call nothing but its share.  One
 * atomic word holds the region number, its task count and the next task to
 * claim, so a claim is only ever made on the region it names; fn and ctx
 * stay put until every claimed task is done.  A region of n tasks wakes
 * workers 0 .. n - 2 only (each has its own condition variable); a worker
 * that took part polls for SPIN_NS before it sleeps again, so back-to-back
 * calls (a benchmark loop of one GEMM) find it awake.
 *
 * A burst (fixq__parallel_hold / _release, around a model call whose regions
 * follow one another with serial steps between) keeps workers 0 .. threads - 2
 * polling between regions: the hold wakes them while the caller is still in
 * its first serial steps, and each polls, yielding the CPU at every check
 * past SPIN_NS, until the release or HOLD_POLL_NS after its last region.  A
 * burst polls only where a CPU is free for its workers (cpu_free), and not
 * within a back-off after a burst in which a worker found itself off the CPU
 * for GAP_NS mid-poll with another thread run in its place (a context switch:
 * a virtual CPU that the host paused shows none, and is no other thread's
 * loss) or the caller was preempted twice: then its workers sleep between
 * regions as outside a burst, since a woken sleeper is served ahead of
 * running threads and a polling one only spends the caller's share of a busy
 * machine.  Holds nest and may come from any thread; they only say how
 * long workers poll, never which thread runs a task.
 *
 * A worker that finds itself on the CPU of the thread that opened the region
 * or hold (sched_getcpu) moves off it: its affinity becomes that thread's
 * CPUs less that one, where that leaves any (keep_apart).  A woken or
 * yielding worker can be left queued behind the caller on one CPU while
 * another idles (seen on a 2-vCPU virtual machine: two thirds of a model
 * call's regions ran their two parts one after the other); its move's switch
 * is not counted as contention.  In a polling burst the caller waits for the
 * workers' tasks polling too, never asleep: a sleeping caller was woken onto
 * the worker's CPU, which then moved, about four times a call.
 *
 * One region runs on the pool at a time; a caller that finds it busy
 * (another thread's region, or a task of one calling in again) runs its
 * tasks on threads of its own.  A task is never dropped: what no thread
 * takes, the caller runs.  Tasks must not fork: fork() waits for the running
 * region.  The child starts with no workers (they do not survive the fork)
 * and no hold, and makes new workers on demand. */
#define _GNU_SOURCE /* RUSAGE_THREAD */
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fixq_internal.h"

#define POOL_MAX 63     /* workers kept; more tasks are claimed by the threads there are */
#define SPIN_NS 20000   /* a worker polls this long for the next region before it sleeps */
#define HOLD_POLL_NS 2000000 /* in a burst, a worker polls this long after its last region before it sleeps */
#define GAP_NS 50000    /* a poll that finds this long passed since its last check was off the CPU */
#define LOAD_SAMPLE_NS 100000000ull /* a burst reads the machine's runnable threads at most this often */
#define BACKOFF_MIN_NS 50000000ull  /* after a contended burst, bursts do not poll for this long, */
#define BACKOFF_MAX_NS 4000000000ull /* doubled after each contended burst up to this, halved after each clean one */

static struct {
  pthread_mutex_t busy; /* held by the caller running a region */
  pthread_mutex_t m;    /* guards asleep[] and the waits on wake[] / done */
  pthread_cond_t done;
  pthread_cond_t wake[POOL_MAX];
  int asleep[POOL_MAX]; /* (written under m, read atomically by cpu_free) */
  int workers;          /* started (written under busy, read atomically by cpu_free) */
  int holds;            /* open holds (under m) */
  int hold_width;       /* workers 0 .. hold_width - 1 poll in this burst (under m; read atomically) */
  uint64_t burst;       /* atomic: the burst number, counted up when a hold opens with none open */
  int contended_burst;  /* this burst found another thread wanting a CPU (under m) */
  uint64_t quiet_until; /* a burst opened before this time does not poll (under m) */
  uint64_t backoff;     /* the next quiet time after a contended burst (under m) */
  uint64_t load_read;   /* when a burst last read the runnable threads (under m) */
  int load_free;        /* whether they left a CPU free for a worker then (under m) */
  uint64_t polled[POOL_MAX]; /* a worker's last burst it polled in (its own; read under m) */
  uint64_t contended[POOL_MAX]; /* a worker's last burst in which it found itself off the CPU (its own) */
  int caller_cpu;       /* atomic: the CPU of the thread that last opened a region or a hold, or -1 */
  int caller_tid;       /* atomic: that thread's id */
  long moves;           /* atomic: workers moved off the caller's CPU (keep_apart), each a switch of its thread */
  uint64_t word;        /* atomic: region number << 32 | task count << 16 | next task */
  int finished;         /* atomic: tasks of this region not yet run to the end */
  fixq__task_fn fn;
  void *ctx;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, .caller_cpu = -1};

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

static uint64_t region_of(uint64_t word) { return word >> 32; }

static int has_task(uint64_t word, uint64_t seen, int w) {
  return region_of(word) != seen && (int)(word >> 16 & 0xFFFF) > w + 1;
}

/* A thread of this burst found itself off the CPU while it polled or worked: no thread of the
 * process polls on in this burst, and none in the bursts of the next backoff ns (under m). */
static void contention_locked(void) {
  if (pool.contended_burst || pool.holds == 0) return;
  pool.contended_burst = 1;
  __atomic_store_n(&pool.hold_width, 0, __ATOMIC_RELEASE);
  pool.backoff = pool.backoff == 0 ? BACKOFF_MIN_NS
                 : pool.backoff * 2 < BACKOFF_MAX_NS ? pool.backoff * 2 : BACKOFF_MAX_NS;
  pool.quiet_until = now_ns() + pool.backoff;
}

/* Whether an open hold of burst `burst` wants worker w polling. */
static int held(int w, uint64_t burst) {
  return __atomic_load_n(&pool.holds, __ATOMIC_ACQUIRE) > 0 &&
         w < __atomic_load_n(&pool.hold_width, __ATOMIC_ACQUIRE) &&
         __atomic_load_n(&pool.burst, __ATOMIC_ACQUIRE) == burst && pool.contended[w] != burst;
}

/* This thread's involuntary context switches (another thread of this machine took its CPU: a preemption, or
 * a sched_yield that handed it over), or -1 where not counted.  A virtual CPU that the host pauses counts none. */
static long thread_preempted(void) {
#ifdef RUSAGE_THREAD
  struct rusage u;
  if (getrusage(RUSAGE_THREAD, &u) == 0) return u.ru_nivcsw;
#endif
  return -1;
}

/* The caller's CPU, where workers keep off it (keep_apart). */
static void set_caller_cpu(void) {
#ifdef __linux__
  static __thread int tid;
  if (tid == 0) tid = (int)syscall(SYS_gettid);
  __atomic_store_n(&pool.caller_tid, tid, __ATOMIC_RELAXED);
  __atomic_store_n(&pool.caller_cpu, sched_getcpu(), __ATOMIC_RELAXED);
#endif
}

/* Moves the calling worker off the caller's CPU when it finds itself there (1: it moved; the file's comment says
 * why): its affinity becomes the caller's CPUs less that one, where that leaves any.  Tried once per CPU the
 * caller is found on (`off`). */
static int keep_apart(int *off) {
#ifdef __linux__
  const int caller = __atomic_load_n(&pool.caller_cpu, __ATOMIC_RELAXED);
  if (caller < 0 || caller == *off || caller >= CPU_SETSIZE || sched_getcpu() != caller) return 0;
  *off = caller;
  cpu_set_t set;
  if (sched_getaffinity((pid_t)__atomic_load_n(&pool.caller_tid, __ATOMIC_RELAXED), sizeof set, &set) != 0) return 0;
  CPU_CLR(caller, &set);
  if (CPU_COUNT(&set) == 0 || pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) return 0;
  __atomic_add_fetch(&pool.moves, 1, __ATOMIC_RELAXED);
  return 1;
#else
  (void)off;
  return 0;
#endif
}

/* Worker w: polls (when it took part in the last region, or a hold woke it)
 * and then sleeps until a region other than `seen` that has a task for it
 * (more than w + 1 tasks); returns that region's number. */
static uint64_t next_region(int w, uint64_t seen, int poll, int *off) {
  uint64_t word;
  for (;; poll = 1) {
    if (poll) {
      const uint64_t start = now_ns();
      for (unsigned i = 1;; i++) {
        word = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE);
        if (has_task(word, seen, w)) return region_of(word);
        if (i % 64 == 0 && now_ns() - start > SPIN_NS) break;
        relax();
      }
      const uint64_t burst = __atomic_load_n(&pool.burst, __ATOMIC_ACQUIRE);
      pool.polled[w] = burst;
      long switches = thread_preempted();
      for (uint64_t last = now_ns(); held(w, burst);) { /* a burst: poll on, the CPU yielded at every check */
        for (int i = 0; i < 16; i++) {
          word = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE);
          if (has_task(word, seen, w)) return region_of(word);
          relax();
        }
        sched_yield();
        if (keep_apart(off)) { /* the move's own switch and time are no other thread's */
          switches = thread_preempted();
          last = now_ns();
          continue;
        }
        const uint64_t now = now_ns();
        if (now - last > GAP_NS) { /* off the CPU: contention where another thread took it (a switch) */
          const long now_switches = thread_preempted();
          if (now_switches != switches || now_switches < 0) {
            pool.contended[w] = burst;
            break;
          }
          switches = now_switches;
        }
        if (now - start > HOLD_POLL_NS) break;
        last = now;
      }
    }
    pthread_mutex_lock(&pool.m);
    if (pool.contended[w] == __atomic_load_n(&pool.burst, __ATOMIC_ACQUIRE)) contention_locked();
    __atomic_store_n(&pool.asleep[w], 1, __ATOMIC_RELAXED);
    int woken = 0;
    for (;;) {
      word = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE);
      if (has_task(word, seen, w)) break;
      const uint64_t burst = __atomic_load_n(&pool.burst, __ATOMIC_ACQUIRE);
      if (pool.polled[w] != burst && held(w, burst)) { /* a hold opened: poll for its first region */
        woken = 1;
        break;
      }
      pthread_cond_wait(&pool.wake[w], &pool.m);
    }
    __atomic_store_n(&pool.asleep[w], 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&pool.m);
    if (!woken) return region_of(word);
  }
}

/* Claims and runs tasks of region `region` until none is left; returns how many it ran. */
static int run_claimed(uint64_t region) {
  int ran = 0;
  uint64_t word = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE);
  for (;;) {
    if (region_of(word) != region || (word & 0xFFFF) >= (word >> 16 & 0xFFFF)) return ran;
    if (!__atomic_compare_exchange_n(&pool.word, &word, word + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) continue;
    pool.fn(pool.ctx, (int)(word & 0xFFFF));
    ran++;
    word = __atomic_load_n(&pool.word, __ATOMIC_ACQUIRE);
  }
}

typedef struct {
  int w;
  uint64_t seen; /* the region number when it was started */
} worker_start;

static void *worker(void *arg) {
  const worker_start start = *(worker_start *)arg;
  free(arg);
  uint64_t seen = start.seen;
  int ran = 1;
  int off = -1; /* keep_apart's */
  for (;;) {
    seen = next_region(start.w, seen, ran > 0, &off);
    keep_apart(&off);
    ran = run_claimed(seen);
    if (ran > 0 && __atomic_sub_fetch(&pool.finished, ran, __ATOMIC_ACQ_REL) == 0) {
      pthread_mutex_lock(&pool.m);
      pthread_cond_signal(&pool.done);
      pthread_mutex_unlock(&pool.m);
    }
  }
  return NULL;
}

/* Blocks the asynchronous signals in threads started while it is in force
 * (they inherit it), so that those go to the application's threads; a fault
 * (SIGSEGV, SIGBUS, SIGFPE, SIGILL, ...) stays with the thread that raised it. */
static void block_signals(sigset_t *old) {
  sigset_t set;
  sigfillset(&set);
  const int sync[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS};
  for (size_t i = 0; i < sizeof sync / sizeof sync[0]; i++) sigdelset(&set, sync[i]);
  pthread_sigmask(SIG_SETMASK, &set, old);
}

/* ---- a caller that finds the pool busy: threads of its own ---------------- */

typedef struct {
  fixq__task_fn fn;
  void *ctx;
  int n;
  int next; /* atomic */
} spawned_region;

static void *run_spawned_tasks(void *arg) {
  spawned_region *r = arg;
  for (int t; (t = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED)) < r->n;) r->fn(r->ctx, t);
  return NULL;
}

static void run_spawned(int n, fixq__task_fn fn, void *ctx) {
  spawned_region r = {fn, ctx, n, 0};
  const int extra = n - 1 < POOL_MAX ? n - 1 : POOL_MAX;
  pthread_t tid[POOL_MAX];
  int started = 0;
  sigset_t old;
  block_signals(&old);
  while (started < extra && pthread_create(&tid[started], NULL, run_spawned_tasks, &r) == 0) started++;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  run_spawned_tasks(&r);
  for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
}

/* ---- the pool ---------------------------------------------------------------- */

static void fork_prepare(void) { pthread_mutex_lock(&pool.busy); }
static void fork_parent(void) { pthread_mutex_unlock(&pool.busy); }
static void fork_child(void) {
  /* only the forking thread exists here; it holds busy (fork_prepare) */
  pthread_mutex_init(&pool.m, NULL);
  pthread_cond_init(&pool.done, NULL);
  for (int w = 0; w < pool.workers; w++) {
    pthread_cond_init(&pool.wake[w], NULL);
    pool.asleep[w] = 0;
  }
  pool.workers = 0;
  pool.holds = 0; /* the child's threads released nothing; fixq__parallel_release stops at 0 */
  pool.hold_width = 0;
  pthread_mutex_unlock(&pool.busy);
}

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static void pool_init(void) {
  for (int w = 0; w < POOL_MAX; w++) pthread_cond_init(&pool.wake[w], NULL);
  pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* Worker number pool.workers, detached (it runs until the process ends). */
static int start_worker(void) {
  worker_start *s = malloc(sizeof *s);
  pthread_t tid;
  pthread_attr_t attr;
  if (s == NULL) return 0;
  pool.polled[pool.workers] = pool.contended[pool.workers] = 0; /* bursts are numbered from 1 */
  /* the region changes only under busy, as here */
  *s = (worker_start){pool.workers, region_of(__atomic_load_n(&pool.word, __ATOMIC_RELAXED))};
  int ok = pthread_attr_init(&attr) == 0;
  if (ok) {
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ok = pthread_create(&tid, &attr, worker, s) == 0;
    pthread_attr_destroy(&attr);
  }
  if (!ok) free(s);
  return ok;
}

void fixq__parallel(int n, fixq__task_fn fn, void *ctx) {
  if (n <= 1) {
    if (n == 1) fn(ctx, 0);
    return;
  }
  pthread_once(&pool_once, pool_init);
  if (n > 0xFFFF || pthread_mutex_trylock(&pool.busy) != 0) { /* another region holds the pool */
    run_spawned(n, fn, ctx);
    return;
  }
  const int want = n - 1 < POOL_MAX ? n - 1 : POOL_MAX;
  if (pool.workers < want) {
    sigset_t old;
    block_signals(&old);
    while (pool.workers < want && start_worker()) __atomic_store_n(&pool.workers, pool.workers + 1, __ATOMIC_RELAXED);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  pool.fn = fn;
  pool.ctx = ctx;
  set_caller_cpu();
  __atomic_store_n(&pool.finished, n, __ATOMIC_RELAXED);
  const uint64_t region = region_of(__atomic_load_n(&pool.word, __ATOMIC_RELAXED)) + 1;
  __atomic_store_n(&pool.word, region << 32 | (uint64_t)n << 16, __ATOMIC_RELEASE);
  pthread_mutex_lock(&pool.m);
  for (int w = 0; w < want && w < pool.workers; w++)
    if (pool.asleep[w]) pthread_cond_signal(&pool.wake[w]);
  pthread_mutex_unlock(&pool.m);
  const int mine = run_claimed(region);
  const int left = mine > 0 ? __atomic_sub_fetch(&pool.finished, mine, __ATOMIC_ACQ_REL)
                            : __atomic_load_n(&pool.finished, __ATOMIC_ACQUIRE);
  if (left > 0) { /* workers' tasks still running: poll, then sleep (in a polling burst: poll, yielding) */
    const uint64_t start = now_ns();
    for (unsigned i = 1; __atomic_load_n(&pool.finished, __ATOMIC_ACQUIRE) > 0; i++) {
      if (i % 64 == 0 && now_ns() - start > SPIN_NS) {
        /* a polling burst: a caller woken from a sleep may be put on a worker's CPU */
        if (__atomic_load_n(&pool.hold_width, __ATOMIC_ACQUIRE) > 0) {
          sched_yield();
          continue;
        }
        pthread_mutex_lock(&pool.m);
        while (__atomic_load_n(&pool.finished, __ATOMIC_ACQUIRE) > 0) pthread_cond_wait(&pool.done, &pool.m);
        pthread_mutex_unlock(&pool.m);
        break;
      }
      relax();
    }
  }
  pthread_mutex_unlock(&pool.busy);
}

/* Whether a CPU beside the caller's is free for a worker: the runnable threads /proc/loadavg counts (the
 * caller and its polling workers among them) fewer than the online CPUs plus those workers; where it cannot
 * be read, 1.  A sleeping worker is woken ahead of running threads, a polling one is not: on a machine
 * whose CPUs are all wanted, polling between regions only takes CPU time from the caller's share. */
static int cpu_free(void) {
  char buf[128];
  const int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 1;
  const ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 1;
  buf[n] = '\0';
  const char *p = buf; /* "1.00 0.50 0.25 running/threads last-pid" */
  for (int field = 0; field < 3 && p != NULL; field++)
    if ((p = strchr(p, ' ')) != NULL) p++;
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (p == NULL || cpus < 1) return 1;
  int polling = 0;
  for (int w = 0, workers = __atomic_load_n(&pool.workers, __ATOMIC_RELAXED); w < workers; w++)
    polling += !__atomic_load_n(&pool.asleep[w], __ATOMIC_RELAXED);
  return strtol(p, NULL, 10) < cpus + polling;
}

static __thread int thread_holds;       /* this thread's open holds */
static __thread long thread_preempted0; /* thread_preempted() less pool.moves at its outermost hold */

void fixq__parallel_hold(int threads) {
  if (threads <= 1) return;
  pthread_once(&pool_once, pool_init);
  if (thread_holds++ == 0) thread_preempted0 = thread_preempted() - __atomic_load_n(&pool.moves, __ATOMIC_RELAXED);
  set_caller_cpu();
  const int width = threads - 1 < POOL_MAX ? threads - 1 : POOL_MAX;
  const uint64_t now = now_ns();
  pthread_mutex_lock(&pool.m);
  int wake = 0;
  if (pool.holds == 0) {
    __atomic_store_n(&pool.burst, pool.burst + 1, __ATOMIC_RELEASE);
    if (now - pool.load_read >= LOAD_SAMPLE_NS) {
      pool.load_read = now;
      pool.load_free = cpu_free();
    }
    pool.contended_burst = now < pool.quiet_until || !pool.load_free; /* quiet: polls as outside a burst */
    wake = !pool.contended_burst;
  } else {
    wake = !pool.contended_burst && width > pool.hold_width;
  }
  if (wake) __atomic_store_n(&pool.hold_width, width, __ATOMIC_RELEASE);
  __atomic_store_n(&pool.holds, pool.holds + 1, __ATOMIC_RELEASE);
  for (int w = 0; wake && w < width; w++)
    if (pool.asleep[w]) pthread_cond_signal(&pool.wake[w]);
  pthread_mutex_unlock(&pool.m);
}

void fixq__parallel_release(int threads) {
  if (threads <= 1 || thread_holds == 0) return; /* no hold of this thread's own to end: another's stays open */
  pthread_once(&pool_once, pool_init);
  /* two switches (one may be a kernel thread's few microseconds) */
  /* (a worker's move off this thread's CPU preempts it once) */
  const int preempted = --thread_holds == 0 &&
                        thread_preempted() - __atomic_load_n(&pool.moves, __ATOMIC_RELAXED) - thread_preempted0 >= 2;
  pthread_mutex_lock(&pool.m);
  if (preempted) contention_locked();
  if (pool.holds == 1 && !pool.contended_burst) /* a burst that polled undisturbed: half the back-off */
    pool.backoff = pool.backoff / 2 < BACKOFF_MIN_NS ? 0 : pool.backoff / 2;
  if (pool.holds > 0) __atomic_store_n(&pool.holds, pool.holds - 1, __ATOMIC_RELEASE);
  if (pool.holds == 0) __atomic_store_n(&pool.hold_width, 0, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&pool.m);
}

int fixq__parallel_holds(void) {
  pthread_once(&pool_once, pool_init);
  pthread_mutex_lock(&pool.m);
  const int holds = pool.holds;
  pthread_mutex_unlock(&pool.m);
  return holds;
}
