// failopen FILE N: try open(FILE, O_WRONLY) N times (expected to fail with EACCES).
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int c, char **v) {
  int n = atoi(v[2]), ok = 0, bad = 0;
  for (int i = 0; i < n; i++) { int fd = open(v[1], O_WRONLY); if (fd >= 0) { ok++; close(fd);} else bad++; usleep(1000);}
  fprintf(stderr, "ok=%d failed=%d\n", ok, bad);
  return 0;
}
