// Load generator for `make bench`: one tight loop of the behaviour whose slowdown the daemon may
// cause, timed inside the process so that process start-up and `stance launch` are not measured.
//
//   loadgen open N         openat+close of 4 files, round-robin
//   loadgen forkexec N     fork, execve /bin/true, waitpid
//   loadgen connect N      TCP connect to a loopback listener this process runs in a thread, close
//   loadgen rate R SECS    opens paced at R per second for SECS seconds (the loss test)
//
// Prints one line of key=value pairs that tests/bench/run.sh parses: wall-clock time per operation,
// and CPU time per operation (this process's threads and its waited-for children, user + system).
// Time the kernel spends in the probes on the workload's behalf is system time of the workload, so
// the CPU figure includes it; time the workload spends preempted by other tasks on a busy machine is
// not CPU time, so that figure is the steadier of the two.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// Files every Debian system has; opened read-only, so the loop changes nothing.
static const char *const FILES[4] = {"/etc/hostname", "/etc/passwd", "/etc/group", "/etc/hosts"};

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double tv_s(struct timeval tv) {
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

// User + system time of this process (all threads) and of its waited-for children.
static double cpu_s(void) {
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    return tv_s(self.ru_utime) + tv_s(self.ru_stime) + tv_s(kids.ru_utime) + tv_s(kids.ru_stime);
}

static void open_close(long i) {
    int fd = openat(AT_FDCWD, FILES[i & 3], O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(FILES[i & 3]);
    close(fd);
}

static void fork_exec(void) {
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        char *const argv[] = {"true", NULL};
        char *const envp[] = {NULL};
        execve("/bin/true", argv, envp);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0)
        die("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "loadgen: /bin/true failed (status %d)\n", status);
        exit(1);
    }
}

static void *accept_loop(void *arg) {
    int lfd = *(int *)arg;
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        // The client resets its end at once; a connection reset before accept is not an error here.
        if (c >= 0)
            close(c);
        else if (errno != ECONNABORTED && errno != EINTR)
            die("accept");
    }
    return NULL;
}

// Starts the listener thread; returns the address to connect to.
static struct sockaddr_in start_listener(void) {
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &len) < 0)
        die("listen");
    static int fd;
    fd = lfd;
    pthread_t t;
    if (pthread_create(&t, NULL, accept_loop, &fd) != 0)
        die("pthread_create");
    pthread_detach(t);
    return a;
}

static void connect_close(const struct sockaddr_in *a) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        die("socket");
    if (connect(s, (const struct sockaddr *)a, sizeof *a) < 0)
        die("connect");
    // Reset rather than FIN: tens of thousands of client ports in TIME_WAIT would exhaust the
    // ephemeral range within one run.
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(s);
}

// Opens paced at `rate` per second: each millisecond's share, then sleep to the next millisecond
// (absolute deadlines, so a late tick is made up rather than lost).
static void paced_opens(long rate, double secs) {
    long total = (long)((double)rate * secs);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    double t0 = now_s();
    long done = 0;
    for (long tick = 1; done < total; tick++) {
        long due = rate * tick / 1000;
        if (due > total)
            due = total;
        for (; done < due; done++)
            open_close(done);
        next.tv_nsec += 1000000;
        if (next.tv_nsec >= 1000000000) {
            next.tv_nsec -= 1000000000;
            next.tv_sec++;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    double dt = now_s() - t0;
    printf("mode=rate opens=%ld secs=%.3f rate=%.0f\n", done, dt, (double)done / dt);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: loadgen open|forkexec|connect N | loadgen rate R SECONDS\n");
        return 2;
    }
    const char *mode = argv[1];
    long n = atol(argv[2]);
    if (n <= 0) {
        fprintf(stderr, "loadgen: N must be positive\n");
        return 2;
    }
    if (strcmp(mode, "rate") == 0) {
        if (argc < 4 || atof(argv[3]) <= 0) {
            fprintf(stderr, "usage: loadgen rate R SECONDS\n");
            return 2;
        }
        paced_opens(n, atof(argv[3]));
        return 0;
    }

    struct sockaddr_in addr;
    if (strcmp(mode, "connect") == 0)
        addr = start_listener();
    else if (strcmp(mode, "open") != 0 && strcmp(mode, "forkexec") != 0) {
        fprintf(stderr, "loadgen: unknown mode %s\n", mode);
        return 2;
    }

    double t0 = now_s(), c0 = cpu_s();
    for (long i = 0; i < n; i++) {
        if (mode[0] == 'o')
            open_close(i);
        else if (mode[0] == 'f')
            fork_exec();
        else
            connect_close(&addr);
    }
    double dt = now_s() - t0, dc = cpu_s() - c0;
    printf("mode=%s ops=%ld secs=%.3f ns_per_op=%.1f cpu_ns_per_op=%.1f\n", mode, n, dt, dt * 1e9 / (double)n,
           dc * 1e9 / (double)n);
    return 0;
}
