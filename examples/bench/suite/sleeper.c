/* The supervised program of the peer rows (peer_rows.rs), compiled by the bench with `cc`,
 * statically so that it also runs in the busybox test image.
 *
 * `sleeper [SOCK]`: first thing, reads CLOCK_MONOTONIC; sends "PID SEC NSEC" to the unix
 * datagram socket SOCK (default ./report.sock, for runit and s6, which run ./run with no
 * socket argument; s6-supervise passes the service name as argv[1], so only an absolute
 * path counts as SOCK); tells s6 it is ready if the service directory has a
 * notification-fd file; then pauses until killed. A send that fails (no socket: the idle
 * fleets of the memory rows) is ignored.
 *
 * `sleeper kill PID`: reads CLOCK_MONOTONIC, sends SIGKILL to PID, prints "SEC NSEC RC".
 * The bench kills through this so that both ends of a sample are read by the same code
 * with the same clock. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void tell_s6_ready(void) {
    FILE *f = fopen("notification-fd", "r");
    int fd;
    if (f == NULL) return;
    if (fscanf(f, "%d", &fd) == 1 && fd > 2) {
        (void)write(fd, "\n", 1);
        close(fd);
    }
    fclose(f);
}

int main(int argc, char **argv) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (argc == 3 && strcmp(argv[1], "kill") == 0) {
        pid_t pid = (pid_t)atoi(argv[2]);
        clock_gettime(CLOCK_MONOTONIC, &t);
        int rc = kill(pid, SIGKILL);
        printf("%lld %ld %d\n", (long long)t.tv_sec, t.tv_nsec, rc);
        return rc == 0 ? 0 : 1;
    }
    const char *path = argc >= 2 && argv[1][0] == '/' ? argv[1] : "report.sock";
    int sock = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (sock >= 0) {
        struct sockaddr_un a;
        char msg[64];
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        strncpy(a.sun_path, path, sizeof a.sun_path - 1);
        int n = snprintf(msg, sizeof msg, "%d %lld %ld", (int)getpid(), (long long)t.tv_sec,
                         t.tv_nsec);
        (void)sendto(sock, msg, (size_t)n, 0, (struct sockaddr *)&a, sizeof a);
        close(sock);
    }
    tell_s6_ready();
    for (;;) pause();
}
