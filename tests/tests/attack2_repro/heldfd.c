// heldfd FILE TEXT SECONDS: open O_WRONLY now, write TEXT at offset 0 after SECONDS.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int c, char **v) {
  if (c < 4) return 2;
  int fd = open(v[1], O_WRONLY);
  if (fd < 0) { perror("open"); return 1; }
  fprintf(stderr, "opened\n");
  sleep(atoi(v[3]));
  if (pwrite(fd, v[2], strlen(v[2]), 0) < 0) perror("pwrite");
  fprintf(stderr, "written\n");
  // keep it open a long time so close/exit does not settle soon
  sleep(c > 4 ? atoi(v[4]) : 0);
  return 0;
}
