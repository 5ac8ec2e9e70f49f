#!/usr/bin/env bash
# A pod sandbox, as `kemu net pod add|del` makes it, with iproute2 only. Idempotent.
# Usage: pod.sh add CLUSTER NODE-INDEX POD IP   (IP inside 10.244.NODE-INDEX.0/24, not .0/.1/.255)
#        pod.sh del CLUSTER NODE-INDEX POD
source "$(dirname "$0")/common.sh"
verb=${1:?usage: pod.sh add|del CLUSTER NODE-INDEX POD [IP]}
cluster=${2:?cluster}
index=${3:?node index}
pod=${4:?pod name}
check_cluster_name "$cluster"
N=$(ns "node-$index")
P=$(ns "p-$pod")
veth=$(pod_veth "$pod")

case $verb in
add)
  addr=${5:?pod IP}
  # One veth: the node end is a port of cbr0, the pod end is the pod's eth0.
  # A /32: every packet, to a pod of the same node too, goes through the node's IP layer.
  plug "$N" cbr0 "$veth" "$P" "$addr/32"
  ip -n "$P" link set eth0 address "$(pod_mac "$addr")"
  ip -n "$P" route replace "$pod_net.$index.1" dev eth0 proto static
  ip -n "$P" route replace default via "$pod_net.$index.1" dev eth0 proto static
  # Processes started with `ip netns exec` see this file as /etc/resolv.conf.
  mkdir -p "/etc/netns/$P"
  printf 'search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver %s\noptions ndots:5\n' "$dns_ip" \
    > "/etc/netns/$P/resolv.conf"
  # … and this one as /etc/hosts: the pod's name at its address, as kubelet writes it.
  printf '# Kubernetes-managed hosts file (kemu).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n' "$addr" "$pod" \
    > "/etc/netns/$P/hosts"
  echo "pod $pod on node-$index: $addr"
  ;;
del)
  for pid in $(ip netns pids "$P" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  have_link "$N" "$veth" && ip -n "$N" link del "$veth"
  have_ns "$P" && ip netns del "$P"
  rm -rf "/etc/netns/$P"
  echo "pod $pod removed"
  ;;
*) echo "usage: pod.sh add|del …" >&2; exit 2 ;;
esac
