#!/usr/bin/env bash
# make demo: a 2-node cluster network, a pod on each node, a web server in one pod, and requests to
# it from the other pod (across nodes) and from a node.
set -euo pipefail
kemu=${1:-.build/debug/kemu}
cluster=demo
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || "$kemu" net down --cluster "$cluster" >/dev/null
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

"$kemu" net down --cluster "$cluster" >/dev/null
step "kemu net up: fabric, cp, client, lb and 2 nodes as network namespaces"
"$kemu" net up -f configs/cluster.yaml --cluster "$cluster"
step "a pod on each node"
"$kemu" net pod add --cluster "$cluster" --node node-1 web
"$kemu" net pod add --cluster "$cluster" --node node-2 shell
step "a web server in pod web (10.244.1.2), started inside its namespace"
"$kemu" net exec --cluster "$cluster" web -- python3 -m http.server 8080 --bind 0.0.0.0 >/dev/null 2>&1 &
server_pid=$!
for _ in $(seq 50); do
  "$kemu" net exec --cluster "$cluster" shell -- curl -s -o /dev/null --max-time 1 http://10.244.1.2:8080/ && break
  sleep 0.1
done
step "pod shell (node-2) → pod web (node-1): across the fabric"
"$kemu" net exec --cluster "$cluster" shell -- curl -s -o /dev/null -w 'HTTP %{http_code} from %{remote_ip} in %{time_total}s\n' http://10.244.1.2:8080/
step "node-2 → pod web"
"$kemu" net exec --cluster "$cluster" node-2 -- curl -s -o /dev/null -w 'HTTP %{http_code} from %{remote_ip}\n' http://10.244.1.2:8080/
step "the pod's own view: its addresses, routes and resolv.conf"
"$kemu" net exec --cluster "$cluster" shell -- ip -br -4 addr
"$kemu" net exec --cluster "$cluster" shell -- ip route
"$kemu" net exec --cluster "$cluster" shell -- cat /etc/resolv.conf
if [ "${KEEP:-0}" = 1 ]; then
  echo; echo "cluster kept: try  $kemu net exec --cluster $cluster shell -- curl http://10.244.1.2:8080/  and  $kemu net down --cluster $cluster"
else
  step "kemu net down: everything named kemu-$cluster-* is removed (KEEP=1 keeps it)"
fi
