#!/bin/sh
# Unprivileged: keep chmod'ing a file of our own that merely shares the managed
# file's last path component. Bounded: N iterations of 50 ms.
N=${2:-300}
D=$(mktemp -d /tmp/a2n.XXXXXX); : > "$D/$1"
i=0; while [ $i -lt $N ]; do chmod 644 "$D/$1"; sleep 0.05; i=$((i+1)); done
rm -rf "$D"
