#!/usr/bin/env bash
# make demo: `kemu up` a 2-node cluster, apply four kemu/echo pods with real kubectl, and curl
# every pod from a pod on the other node; then the failover story (an experiment: a pod killed and a
# node partitioned under load, with its report). KEEP=1 leaves the cluster up to play with.
set -euo pipefail
kemu=$(realpath "${1:-.build/debug/kemu}")
cluster=demo
export KUBECONFIG=/run/kemu/$cluster/apiserver/kubeconfig
cache=$(mktemp -d)
kubectl() { /usr/bin/kubectl --cache-dir "$cache" "$@"; }
cleanup() {
  rm -rf "$cache"
  [ "${KEEP:-0}" = 1 ] || "$kemu" down --cluster "$cluster" >/dev/null
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

"$kemu" down --cluster "$cluster" >/dev/null
step "kemu up: network, API server, one node agent per node"
"$kemu" up -f configs/cluster.yaml --cluster "$cluster"
step "kubectl get nodes"
kubectl get nodes -o wide
step "kubectl apply -f configs/demo-app.yaml: a ReplicaSet of four kemu/echo pods"
kubectl apply -f configs/demo-app.yaml
for _ in $(seq 100); do
  [ "$(kubectl get rs echo -o jsonpath='{.status.readyReplicas}')" = 4 ] && break
  sleep 0.1
done
kubectl get rs,pods -o wide
step "every pod, asked from a pod on the other node (real TCP across the fabric)"
mapfile -t pods < <(kubectl get pods -l app=echo -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{"\n"}{end}')
for line in "${pods[@]}"; do
  read -r name node ip <<<"$line"
  for other in "${pods[@]}"; do
    read -r from from_node _ <<<"$other"
    if [ "$from_node" != "$node" ]; then
      printf '%-8s (%s) → %-8s %-12s ' "$from" "$from_node" "$name" "$ip"
      "$kemu" curl --cluster "$cluster" --from "$from" "http://$ip:8080/hello?format=text"
      break
    fi
  done
done
step "the echo Service: its ClusterIP from a pod (each node's proxy balances round robin), its NodePort from outside"
vip=$(kubectl get svc echo -o jsonpath='{.spec.clusterIP}')
read -r from _ <<<"${pods[0]}"
for _ in 1 2 3 4; do "$kemu" curl --cluster "$cluster" --from "$from" "http://$vip/?format=text"; done
for node_ip in $(kubectl get nodes -o jsonpath='{.items[*].status.addresses[0].address}'); do
  printf 'client → %s:30080  ' "$node_ip"
  "$kemu" curl --cluster "$cluster" --from client "http://$node_ip:30080/?format=text"
done
read -r victim _ <<<"${pods[0]}"
step "kill -9 the process of $victim: its node agent restarts it at once"
pid=$(kubectl get pod "$victim" -o jsonpath='{.status.containerStatuses[0].containerID}'); pid=${pid#kemu://}
kill -9 "$pid"
for _ in $(seq 100); do
  [ "$(kubectl get pod "$victim" -o jsonpath='{.status.containerStatuses[0].restartCount}/{.status.containerStatuses[0].ready}')" = "1/true" ] && break
  sleep 0.1
done
kubectl get pod "$victim"
step "kubectl delete pod $victim: it ends gracefully, the ReplicaSet makes a new one"
kubectl delete pod "$victim"
for _ in $(seq 100); do
  [ "$(kubectl get rs echo -o jsonpath='{.status.readyReplicas}')" = 4 ] && break
  sleep 0.1
done
kubectl get pods -o wide
step "the failover story: kemu experiment run configs/experiments/demo-failover.yaml"
echo "curl loops from a pod (ClusterIP) and from the client host (load balancer); at 2 s a pod is"
echo "killed, at 4 s node-2 is cut off the network, at 16 s it is healed."
"$kemu" experiment run --cluster "$cluster" configs/experiments/demo-failover.yaml
step "what the cluster recorded: kubectl get events --field-selector source=kemu-chaos"
kubectl get events --field-selector source=kemu-chaos
step "kemu status"
"$kemu" status --cluster "$cluster"
if [ "${KEEP:-0}" = 1 ]; then
  echo; echo "cluster kept:  export KUBECONFIG=$KUBECONFIG;  kubectl get pods -o wide;  $kemu down --cluster $cluster"
else
  step "kemu down: daemons stopped by pid, everything named kemu-$cluster-* removed (KEEP=1 keeps it)"
fi
