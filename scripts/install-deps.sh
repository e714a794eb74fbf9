#!/usr/bin/env bash
# Install what nomad-medic needs to build and test on Debian 12, from Debian's packages.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libcurl4-openssl-dev libcjson-dev libconfig-dev libsqlite3-dev libarchive-dev
  libcmocka-dev python3 sqlite3 libssl-dev
  containernetworking-plugins iptables nftables iproute2
  libmicrohttpd-dev prometheus
  golang-go golang-github-hashicorp-hcl-v2-dev jq systemd
  time curl
)

run_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "install-deps.sh: run as root or install sudo: apt-get needs root" >&2
    exit 1
  fi
}

run_as_root apt-get update -q
run_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
