#!/bin/bash
# Compares two kemu builds on meshed new connections/s, or one build meshed against plain,
# with runs alternated so that both see the same moment of the machine: this VM's speed drifts
# by about 10 % from one minute to the next, more than most changes are worth.
#
#   scripts/mesh-pair.sh A/kemu B/kemu [rounds]   two clusters, one per build, meshed runs alternated
#   scripts/mesh-pair.sh A/kemu [rounds]          one cluster, meshed and plain runs alternated
#
# Each binary must be named `kemu` (`kemu down` knows its daemons by that name). Each run is
# `wrk -c32 -d10s` with `Connection: close`, from a client pod on node-1 to a Service whose
# HAProxy pod is on node-2; it prints the rate and both proxies' CPU per connection, then one
# keep-alive connection's request latency (p50 / p99, `wrk -c1 -d5s`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "mesh-pair: needs root" >&2; exit 1; }
if [ $# -ge 2 ] && [ -x "$2" ]; then builds=("$1" "$2"); rounds=${3:-4}; else builds=("$1"); rounds=${2:-3}; fi
work=$(mktemp -d /tmp/kemu-mesh-pair.XXXXXX)
chmod 755 "$work"  # the pods run as nobody, and read the HAProxy config from here
clusters=()
cleanup() {
    for i in "${!clusters[@]}"; do "${builds[$i]}" down --cluster "${clusters[$i]}" >/dev/null 2>&1 || true; done
    rm -rf "$work"
}
trap cleanup EXIT

printf 'global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode http\n  timeout client 30s\n  timeout connect 5s\n  timeout server 30s\nfrontend answer\n  bind :8080\n  http-request return status 200 content-type text/plain string "ok"\n' >"$work/backend.cfg"
cat >"$work/app.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: http, labels: {app: http}}
spec: {nodeName: node-2, containers: [{name: c, image: busybox, command: [haproxy, -db, -f, $work/backend.cfg]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec: {nodeName: node-1, containers: [{name: c, image: busybox, command: [sleep, "86400"]}]}
---
apiVersion: v1
kind: Service
metadata: {name: http}
spec: {selector: {app: http}, ports: [{port: 80, targetPort: 8080}]}
EOF

kc() { kubectl --kubeconfig "/run/kemu/$1/apiserver/kubeconfig" --cache-dir "$work/kubectl-$1" "${@:2}"; }
mesh() { if [ "$2" = on ]; then kc "$1" label namespace default kemu.dev/mesh=enabled --overwrite >/dev/null; else kc "$1" label namespace default kemu.dev/mesh- >/dev/null; fi; sleep 3; }

for i in "${!builds[@]}"; do
    name="kpair$i"
    clusters+=("$name")
    "${builds[$i]}" up --cluster "$name" >/dev/null
    kc "$name" apply -f "$work/app.yaml" >/dev/null
    kc "$name" wait --for=condition=Ready pod/http pod/client --timeout=60s >/dev/null
    mesh "$name" on
done

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() {
    local name=$1 label=$2
    local vip ns p1 p2 b1 b2 out requests
    vip=$(kc "$name" get svc http -o jsonpath='{.spec.clusterIP}')
    ns="kemu-$name-p-client-$(kc "$name" get pod client -o jsonpath='{.metadata.uid}' | cut -c1-8)"
    ip netns exec "$ns" sysctl -qw net.ipv4.tcp_tw_reuse=1
    p1=$(cat "/run/kemu/$name/proxy-node-1.pid"); p2=$(cat "/run/kemu/$name/proxy-node-2.pid")
    b1=$(cpu "$p1"); b2=$(cpu "$p2")
    out=$(ip netns exec "$ns" wrk -t1 -c32 -d10s -H "Connection: close" "http://$vip/")
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    [ -n "$requests" ] && [ "$requests" -gt 0 ] || { echo "mesh-pair: wrk made no requests: $out" >&2; return 1; }
    printf '%-8s %8s conn/s   CPU per connection: node-1 %s µs, node-2 %s µs\n' "$label" \
        "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
        $(( ($(cpu "$p1") - b1) * 10000000 / requests / 1000 )) $(( ($(cpu "$p2") - b2) * 10000000 / requests / 1000 ))
    out=$(ip netns exec "$ns" wrk -t1 -c1 -d5s --latency "http://$vip/")
    printf '%-8s %8s req/s, 1 conn   latency p50 %s, p99 %s\n' "$label" "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
        "$(echo "$out" | awk '$1 == "50%" {print $2}')" "$(echo "$out" | awk '$1 == "99%" {print $2}')"
}

for _ in $(seq "$rounds"); do
    if [ ${#builds[@]} = 2 ]; then
        run kpair0 A; run kpair1 B
    else
        mesh kpair0 on; run kpair0 meshed
        mesh kpair0 off; run kpair0 plain
    fi
done
