#!/usr/bin/env bash
# Installs, with apt-get, what berth's build, demo and tests need on a fresh
# Debian 12 machine: Debian's containerd (for `ctr`, our compatibility judge,
# and containerd itself for `make bench`), runc, busybox-static (test images
# are built from it), tmux (terminal tests), isal (igzip, which berthd uses
# to inflate large gzip layers). Quick when all is present.
set -euo pipefail
packages=(containerd runc busybox-static tmux isal)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's containerd package enables its own daemon; berth's tests start
# their own daemons and do not need it running.
if command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
  systemctl stop containerd || true
fi
command -v go >/dev/null || { echo "setup: Go is required (expected at /usr/local/go/bin)"; exit 1; }
echo "setup: ok ($(ctr --version), $(runc --version | head -1))"
