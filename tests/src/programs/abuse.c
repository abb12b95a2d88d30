/* abuse MODE ARGS: what a hostile unprivileged user does to wear an agent
 * down. Every mode is bounded: it stops by itself after its count or its
 * time, and prints what it did.
 *   udp MS PORT       connect() a UDP socket and sendto() an unconnected one
 *                     to 127.0.0.1, cycling over 4096 ports from PORT, for MS ms
 *   connects N PORT   N connect() calls of a UDP socket to 127.0.0.1, cycling
 *                     over 64 ports from PORT, as fast as one core allows
 *   exec MS           fork and exec /bin/true, one at a time, for MS ms
 *   idle N PORT MS    open N TCP connections to 127.0.0.1:PORT, hold them MS ms
 *   files DIR N       create N files in DIR
 *   fifo PATH         rename a new FIFO over PATH
 *   remotes FIRST N PORT...  one UDP datagram flow each to N distinct
 *                     addresses from 127.1.0.0 + FIRST, in turn by
 *                     connect() and by sendto() on an unconnected socket,
 *                     cycling over the PORTs
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int udp(long long ms, int port) {
    int connected = socket(AF_INET, SOCK_DGRAM, 0);
    int loose = socket(AF_INET, SOCK_DGRAM, 0);
    if (connected < 0 || loose < 0) { perror("socket"); return 1; }
    long long end = now_ms() + ms, n = 0;
    while (now_ms() < end) {
        for (int i = 0; i < 256; i++, n++) {
            struct sockaddr_in a = loopback(port + (int)(n % 4096));
            connect(connected, (struct sockaddr *)&a, sizeof a);
            sendto(loose, "x", 1, MSG_DONTWAIT, (struct sockaddr *)&a, sizeof a);
        }
    }
    printf("udp %lld\n", n);
    return 0;
}

static int connects(long long count, int port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); return 1; }
    for (long long i = 0; i < count; i++) {
        struct sockaddr_in a = loopback(port + (int)(i % 64));
        connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    printf("connects %lld\n", count);
    return 0;
}

static int exec_storm(long long ms) {
    long long end = now_ms() + ms, n = 0;
    while (now_ms() < end) {
        pid_t pid = fork();
        if (pid == 0) { execl("/bin/true", "true", (char *)0); _exit(127); }
        if (pid < 0) { perror("fork"); return 1; }
        waitpid(pid, 0, 0);
        n++;
    }
    printf("exec %lld\n", n);
    return 0;
}

static int idle(int count, int port, long long ms) {
    int open = 0;
    for (int i = 0; i < count; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) break;
        struct sockaddr_in a = loopback(port);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) open++;
    }
    printf("idle %d\n", open);
    fflush(stdout);
    usleep(ms * 1000);
    return 0;
}

static int files(const char *dir, int count) {
    char path[4096];
    int made = 0;
    for (int i = 0; i < count; i++) {
        snprintf(path, sizeof path, "%s/f%06d", dir, i);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0) continue;
        if (write(fd, "x\n", 2) == 2) made++;
        close(fd);
    }
    printf("files %d\n", made);
    return 0;
}

static int fifo(const char *target) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.fifo", target);
    if (mkfifo(tmp, 0644) != 0 || rename(tmp, target) != 0) { perror("fifo"); return 1; }
    printf("fifo\n");
    return 0;
}

static int remotes(long first, long count, char **ports, int nports) {
    int connected = socket(AF_INET, SOCK_DGRAM, 0);
    int loose = socket(AF_INET, SOCK_DGRAM, 0);
    if (connected < 0 || loose < 0 || nports < 1) { perror("socket"); return 1; }
    long sent = 0;
    for (long i = first; i < first + count; i++) {
        struct sockaddr_in a = loopback(atoi(ports[i % nports]));
        a.sin_addr.s_addr = htonl(0x7f010000u + (unsigned)i);
        int r = (i & 1)
            ? (int)sendto(loose, "x", 1, MSG_DONTWAIT, (struct sockaddr *)&a, sizeof a)
            : connect(connected, (struct sockaddr *)&a, sizeof a);
        if (r >= 0) sent++;
    }
    printf("remotes %ld\n", sent);
    return sent == count ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc >= 4 && !strcmp(argv[1], "udp")) return udp(atoll(argv[2]), atoi(argv[3]));
    if (argc >= 4 && !strcmp(argv[1], "connects")) return connects(atoll(argv[2]), atoi(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "exec")) return exec_storm(atoll(argv[2]));
    if (argc >= 5 && !strcmp(argv[1], "idle")) return idle(atoi(argv[2]), atoi(argv[3]), atoll(argv[4]));
    if (argc >= 4 && !strcmp(argv[1], "files")) return files(argv[2], atoi(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "fifo")) return fifo(argv[2]);
    if (argc >= 5 && !strcmp(argv[1], "remotes"))
        return remotes(atol(argv[2]), atol(argv[3]), argv + 4, argc - 4);
    fprintf(stderr, "usage: abuse udp MS PORT | connects N PORT | exec MS | idle N PORT MS | files DIR N | fifo PATH | remotes FIRST N PORT...\n");
    return 2;
}
