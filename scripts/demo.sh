#!/usr/bin/env bash
# The main job: start berthd on its built-in defaults (socket
# /run/berth/berthd.sock, root /var/lib/berth, state /run/berth) unless one
# is already serving there, import a busybox image built here from the
# host's static busybox (no registry), and run a container from it with
# Debian's ctr and with our berth CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
sock=/run/berth/berthd.sock
export PATH="$PWD/bin:$PATH" # berthd finds containerd-shim-berth-v2 here
if ! ctr -a "$sock" version >/dev/null 2>&1; then
  mkdir -p /var/log
  nohup bin/berthd >/var/log/berthd.log 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    ctr -a "$sock" version >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat /var/log/berthd.log; exit 1; }
    sleep 0.1
  done
  echo "berthd started (pid $pid, log /var/log/berthd.log); stop it with: kill $pid"
fi
archive=$(mktemp -d)/busybox.tar
ref=$(go run ./scripts/mkbusybox "$archive")
set -x
bin/berth -a "$sock" version
ctr -a "$sock" images import "$archive"
bin/berth -a "$sock" images ls 2>/dev/null || ctr -a "$sock" images ls
ctr -a "$sock" run --rm "$ref" demo-ctr echo "hello from a container run by berthd (client: ctr)"
{ set +x; } 2>/dev/null
if bin/berth run --help >/dev/null 2>&1; then
  set -x
  bin/berth -a "$sock" run --rm "$ref" demo-berth sh -c 'echo "hello from a container run by berthd (client: berth), pid $$, $(ls /bin | wc -l) commands in /bin"'
fi
