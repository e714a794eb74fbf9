#!/usr/bin/env bash
# The way operators script the orphan check today, for the benchmark to time:
# one `curl -s` piped into `jq` per request, sequentially, then a join in jq.
#
#   runbook.sh NOMAD_ADDR WORKDIR [LIMIT]
#
# It reads the node list, the allocation list (namespace=*, task_states=false)
# and the service list (namespace=*), then each (namespace, service) pair's
# registrations, and writes WORKDIR/orphans.tsv: namespace, registration ID
# and reason for every registration whose allocation is complete, failed,
# lost or missing from the list. LIMIT > 0 reads only the first LIMIT pairs,
# so the benchmark can time a sample and extrapolate.
#
# Each phase goes to stderr as "runbook: phase NAME START END COUNT" (Unix
# seconds from bash's EPOCHREALTIME), the lines bench.py reads. Needs bash 5,
# curl and jq. Service and namespace names go into the URL as they are:
# Nomad allows only letters, digits and dashes in both.
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: runbook.sh NOMAD_ADDR WORKDIR [LIMIT]" >&2
    exit 2
fi
addr=$1
work=$2
limit=${3:-0}
mkdir -p "$work"

phase() { # NAME START COUNT
    echo "runbook: phase $1 $2 $EPOCHREALTIME $3" >&2
}

start=$EPOCHREALTIME
curl -sf "$addr/v1/nodes" | jq -c '[.[] | {ID, Name, Status}]' > "$work/nodes.json"
curl -sf "$addr/v1/allocations?namespace=*&task_states=false" \
    | jq -c 'map({key: .ID, value: .ClientStatus}) | from_entries' > "$work/allocs.json"
curl -sf "$addr/v1/services?namespace=*" \
    | jq -r '.[] | .Namespace as $ns | .Services[] | [$ns, .ServiceName] | @tsv' > "$work/pairs.tsv"
phase lists "$start" 3

start=$EPOCHREALTIME
count=0
: > "$work/registrations.ndjson"
while IFS=$'\t' read -r ns name; do
    if [ "$limit" -gt 0 ] && [ "$count" -ge "$limit" ]; then
        break
    fi
    curl -sf "$addr/v1/service/$name?namespace=$ns" \
        | jq -c '.[] | {Namespace, ServiceName, ID, AllocID}' >> "$work/registrations.ndjson"
    count=$((count + 1))
done < "$work/pairs.tsv"
phase services "$start" "$count"

start=$EPOCHREALTIME
jq -r --slurpfile allocs "$work/allocs.json" '
    ($allocs[0]) as $status
    | ($status[.AllocID] // "missing") as $s
    | select($s == "complete" or $s == "failed" or $s == "lost" or $s == "missing")
    | [.Namespace, .ID, "allocation " + $s] | @tsv' \
    "$work/registrations.ndjson" > "$work/orphans.tsv"
phase join "$start" "$(wc -l < "$work/orphans.tsv")"
