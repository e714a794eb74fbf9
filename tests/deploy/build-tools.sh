#!/usr/bin/env bash
# Build the tools the deployment tests run, offline, from Debian's packages:
#   hcldec, hclfmt   HashiCorp's HCL v2 decoder and formatter, from
#                    golang-github-hashicorp-hcl-v2-dev (GOPATH mode, as the
#                    package ships no Go module cache)
#   render_template  tests/deploy/render_template.go (Go standard library)
# Usage: tests/deploy/build-tools.sh OUTDIR
# Needs: apt-get install golang-go golang-github-hashicorp-hcl-v2-dev
set -euo pipefail

if [ "$#" -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
out=$1
here=$(cd "$(dirname "$0")" && pwd)
gopath=/usr/share/gocode

if ! command -v go >/dev/null 2>&1; then
  echo "build-tools.sh: go not found; install golang-go (scripts/install-deps.sh does)" >&2
  exit 1
fi
if [ ! -d "$gopath/src/github.com/hashicorp/hcl/v2/cmd/hcldec" ]; then
  echo "build-tools.sh: $gopath/src/github.com/hashicorp/hcl/v2 not found;" \
    "install golang-github-hashicorp-hcl-v2-dev" >&2
  exit 1
fi

mkdir -p "$out"
# The build cache goes beside the tools, so a build never writes to $HOME.
export GOCACHE="$out/go-cache" GO111MODULE=off GOPATH="$gopath"

for tool in hcldec hclfmt; do
  if ! go build -o "$out/$tool" "github.com/hashicorp/hcl/v2/cmd/$tool"; then
    echo "build-tools.sh: building $tool from $gopath failed (output above)" >&2
    exit 1
  fi
done
if ! go build -o "$out/render_template" "$here/render_template.go"; then
  echo "build-tools.sh: building render_template failed (output above)" >&2
  exit 1
fi
echo "build-tools.sh: built hcldec, hclfmt and render_template in $out"
