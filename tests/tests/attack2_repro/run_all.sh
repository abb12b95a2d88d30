#!/bin/sh
# Reproduces the accept_from findings of the h-attack2 security test. Run as
# root from the repository root after `cargo build --release -p reflex`, with
# ansible-core, dpkg-deb and gcc installed. Uses /srv/a2 (created, removed).
set -u
R=$(cd "$(dirname "$0")/../../.." && pwd); D=$(dirname "$(readlink -f "$0")")
B=/srv/a2; REFLEX=$R/target/release/reflex
nob() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
rm -rf $B; mkdir -p $B/managed $B/pol; chmod 700 $B/pol
cat > $B/pol/p.yaml <<'Y'
name: managed
mode: enforce
on:
  file: { paths: ["/srv/a2/managed/*.conf"] }
accept_from:
  process:
    ancestor_exe: ["/usr/bin/ansible*", "/usr/bin/dpkg"]
    uid: [0]
do:
  - revert
  - alert: { summary: "{file.path} {file.change} by {process.exe}" }
Y
chmod 644 $B/pol/p.yaml
printf 'setting=1\nother=2\n' > $B/managed/app.conf
printf 'setting=1\nother=2\n' > $B/managed/gw.conf; chown root:nogroup $B/managed/gw.conf; chmod 664 $B/managed/gw.conf
gcc -O1 -o /tmp/a2-mmapw2 $D/mmapw2.c
$REFLEX run --policies $B/pol --state-dir $B/state --metrics-addr 127.0.0.1:0 >$B/agent.out 2>$B/agent.err &
AGENT=$!; sleep 4
hist() { $REFLEX baseline history "$1" --state-dir $B/state | head -2; }

echo "### 1. write through an fd held past the 500 ms hold is never seen"
nob sh -c 'exec 3<>/srv/a2/managed/gw.conf; sleep 1; printf "setting=HELD-FD\n" >&3; sleep 1'
sleep 2; head -1 $B/managed/gw.conf      # expect setting=HELD-FD (not reverted)

echo "### 2. an unrelated deploy of another file with the same basename accepts it"
mkdir -p /root/a2-unrelated
(cd /tmp && ansible localhost -c local -m copy -a 'dest=/root/a2-unrelated/gw.conf content=unrelated' >/dev/null 2>&1)
sleep 2; hist $B/managed/gw.conf         # expect: accepted ... by python3 under /usr/bin/ansible, content setting=HELD-FD

echo "### 1b. (after 2) same with a shared mapping written after close, no msync"
nob /tmp/a2-mmapw2 $B/managed/gw.conf 0 'setting=MMAP!!' 1500 1
sleep 2; head -1 $B/managed/gw.conf      # expect setting=MMAP!! (not reverted)

echo "### 3. a shell-redirect deploy is accepted as the file at the redirect's first close (empty or partial); an unprivileged chmod of /tmp/x/app.conf then reverts it to that version"
(cd /tmp && ansible localhost -c local -m shell -a '{ printf "setting=INPLACE\n"; sleep 1; printf "other=9\n"; } > /srv/a2/managed/app.conf' >/dev/null 2>&1)
sleep 1; hist $B/managed/app.conf; echo "bytes now: $(wc -c < $B/managed/app.conf)"
nob sh -c 'd=$(mktemp -d); : > $d/app.conf; chmod 600 $d/app.conf; rm -rf $d'
sleep 2; echo "bytes after the unrelated chmod: $(wc -c < $B/managed/app.conf)"   # expect < 24: the deploy's tail is gone

kill $AGENT; wait $AGENT 2>/dev/null
rm -rf /root/a2-unrelated $B /tmp/a2-mmapw2
