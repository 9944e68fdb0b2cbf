#!/usr/bin/env bash
# The main job: start berthd on its built-in defaults (socket
# /run/berth/berthd.sock, root /var/lib/berth, state /run/berth) unless one
# is already serving there, then talk to it with Debian's ctr and our CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
sock=/run/berth/berthd.sock
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
set -x
bin/berth -a "$sock" version
ctr -a "$sock" plugins ls
bin/berth -a "$sock" namespaces create demo purpose=readme 2>/dev/null || true
bin/berth -a "$sock" namespaces ls
