/* group_commit_floor: the fastest the log's group commit could be, without Python.
 *
 * N processes append 128-byte records to one file under "always" with the same
 * protocol as walq's log (native/walq.c, walq/log/log.py): an flock'd append lock
 * around pwrite + publishing the end; then, outside it, whoever wins the sync flock
 * without blocking fdatasyncs everything written so far for everyone, and the rest
 * sleep on a futex word that each sync bumps.  No framing, no checksums, no Python:
 * what it reaches is a ceiling for walq's "8 processes vs 1" and "p99 at 8" numbers
 * on the machine it runs on (bench/bench_floor.py runs it beside walq).
 *
 *   group_commit_floor NPROC SECONDS DIR [YIELDS]
 *
 * Writes DIR/lat.<i> (each process's append latencies, float64 seconds) and prints
 * one line per process: "records t0 t1" (CLOCK_MONOTONIC seconds), then
 * "syncs <n>" on stderr.  YIELDS: sched_yield()s the syncer makes while the end
 * keeps moving before it syncs, as walq's Log._YIELDS.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { RECORD = 128, MAX_RECORDS = 4000000 };
static const size_t CAPACITY = (size_t)64 << 20; /* a segment's size, written over and over */

struct shared {
    uint64_t end;     /* bytes appended (mod CAPACITY on disk) */
    uint64_t durable; /* bytes known on stable storage */
    uint64_t syncs;
    uint32_t synced;  /* futex word: bumped after every sync */
    uint32_t go;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

static void await_durable(struct shared *s, int data_fd, int sync_fd, uint64_t mine, int yields)
{
    for (;;) {
        /* Read before the check, so a sync finishing in between is not missed. */
        uint32_t seen = __atomic_load_n(&s->synced, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&s->durable, __ATOMIC_SEQ_CST) >= mine)
            return;
        if (flock(sync_fd, LOCK_EX | LOCK_NB) == 0) {
            if (__atomic_load_n(&s->durable, __ATOMIC_SEQ_CST) < mine) {
                uint64_t target = __atomic_load_n(&s->end, __ATOMIC_SEQ_CST);
                for (int i = 0; i < yields; i++) {
                    sched_yield();
                    uint64_t moved = __atomic_load_n(&s->end, __ATOMIC_SEQ_CST);
                    if (moved == target)
                        break;
                    target = moved;
                }
                if (fdatasync(data_fd) != 0)
                    die("fdatasync");
                __atomic_store_n(&s->durable, target, __ATOMIC_SEQ_CST);
                __atomic_add_fetch(&s->syncs, 1, __ATOMIC_SEQ_CST);
            }
            flock(sync_fd, LOCK_UN);
            __atomic_add_fetch(&s->synced, 1, __ATOMIC_SEQ_CST);
            syscall(SYS_futex, &s->synced, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
            continue;
        }
        /* The timeout only matters if a syncer died mid-sync; none does here. */
        struct timespec timeout = {0, 5000000};
        syscall(SYS_futex, &s->synced, FUTEX_WAIT, seen, &timeout, NULL, 0);
    }
}

static void appender(struct shared *s, const char *dir, int index, int data_fd, double seconds, int yields)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/lock.append", dir);
    int append_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    snprintf(path, sizeof path, "%s/lock.sync", dir);
    int sync_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (append_fd < 0 || sync_fd < 0)
        die("open lock");
    double *lat = malloc(MAX_RECORDS * sizeof *lat);
    if (!lat)
        die("malloc");
    char record[RECORD];
    memset(record, 'r', sizeof record);
    while (!__atomic_load_n(&s->go, __ATOMIC_SEQ_CST))
        sched_yield();
    size_t n = 0;
    double t0 = now(), deadline = t0 + seconds, t1 = t0;
    while (n < MAX_RECORDS && t1 < deadline) {
        double a = now();
        if (flock(append_fd, LOCK_EX) != 0)
            die("flock");
        uint64_t off = s->end;
        if (pwrite(data_fd, record, RECORD, off % CAPACITY) != RECORD)
            die("pwrite");
        uint64_t mine = off + RECORD;
        __atomic_store_n(&s->end, mine, __ATOMIC_SEQ_CST);
        flock(append_fd, LOCK_UN);
        await_durable(s, data_fd, sync_fd, mine, yields);
        t1 = now();
        lat[n++] = t1 - a;
    }
    snprintf(path, sizeof path, "%s/lat.%d", dir, index);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(lat, sizeof *lat, n, f) != n || fclose(f) != 0)
        die("write latencies");
    printf("%zu %.9f %.9f\n", n, t0, t1);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s NPROC SECONDS DIR [YIELDS]\n", argv[0]);
        return 2;
    }
    int nproc = atoi(argv[1]), yields = argc > 4 ? atoi(argv[4]) : 0;
    double seconds = atof(argv[2]);
    const char *dir = argv[3];
    char path[4096];
    snprintf(path, sizeof path, "%s/data", dir);
    int data_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (data_fd < 0)
        die("open data");
    /* Zero-filled, as walq's segments: an fdatasync after overwriting written
     * blocks journals nothing (bench/RESULTS.md, "append_batch(100)"). */
    static char zeros[1 << 20];
    for (size_t off = 0; off < CAPACITY; off += sizeof zeros)
        if (pwrite(data_fd, zeros, sizeof zeros, off) != (ssize_t)sizeof zeros)
            die("prefill");
    if (fsync(data_fd) != 0)
        die("fsync");
    struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED)
        die("mmap");
    memset(s, 0, sizeof *s);
    for (int i = 0; i < nproc; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            appender(s, dir, i, data_fd, seconds, yields);
            _exit(0);
        }
    }
    usleep(100000); /* all forked and waiting */
    __atomic_store_n(&s->go, 1, __ATOMIC_SEQ_CST);
    int failed = 0;
    for (int i = 0; i < nproc; i++) {
        int status;
        if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    fprintf(stderr, "syncs %llu\n", (unsigned long long)s->syncs);
    return failed;
}
