// writer FILE TEXT: wait 300 ms, then replace FILE's content with TEXT (in place).
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
int main(int c, char **v) {
  const char *f = c > 1 ? v[1] : "/srv/a2/nouid/gw.conf";
  const char *t = c > 2 ? v[2] : "setting=SPOOFED-BY-CWD\nother=2\n";
  usleep(300000);
  int fd = open(f, O_WRONLY | O_TRUNC);
  if (fd < 0) return 1;
  write(fd, t, strlen(t));
  close(fd);
  return 0;
}
