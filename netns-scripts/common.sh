# Shared by the netns-scripts: the addressing of configs/cluster.yaml's defaults (DESIGN.md §1).
# Each script is the plain-iproute2 equivalent of a `kemu net` command, step by step.
set -euo pipefail

fabric_net=172.31.0          # fabric 172.31.0.0/24: cp .2, client .3, lb .4, node-i .(10+i)
lb_pool=172.31.1.0/24        # load-balancer IPs, reached through the lb host
pod_net=10.244               # node-i's pods: 10.244.i.0/24, gateway 10.244.i.1 on cbr0
dns_ip=10.96.0.10            # cluster DNS (service CIDR 10.96.0.0/16, .10)

ns() { echo "kemu-$cluster-$1"; }
have_ns() { [ -e "/run/netns/$1" ]; }

# ip netns add, plus what kemu does in every new namespace: no IPv6 on the links made in it from
# now on (lo keeps ::1). Clusters are IPv4; link-local IPv6 on every veth is multicast noise that a
# node's bridge floods to every pod.
add_ns() {
  have_ns "$1" && return 0
  ip netns add "$1"
  ip netns exec "$1" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
}
# br_netfilter (loaded wherever Docker or a kubelet runs) sends every bridged frame through the
# namespace's iptables hooks and a route lookup; no rule of kemu's is ever there. Off where it is loaded.
no_bridge_netfilter() {
  local t
  for t in iptables ip6tables arptables; do
    [ -e "/proc/sys/net/bridge/bridge-nf-call-$t" ] && ip netns exec "$1" sysctl -qw "net.bridge.bridge-nf-call-$t=0"
  done
  return 0
}
have_link() { ip -n "$1" link show "$2" >/dev/null 2>&1; }

# plug BRIDGE_NS BRIDGE PORT NS ADDR/N: a veth whose PORT end is a port of BRIDGE (in BRIDGE_NS)
# and whose other end is eth0 in namespace NS, with ADDR/N on it. How every host joins the fabric
# and every pod joins its node's cbr0.
plug() {
  local bridge_ns=$1 bridge=$2 port=$3 n=$4 cidr=$5
  add_ns "$n"
  ip -n "$n" link set lo up
  have_link "$bridge_ns" "$port" || ip -n "$bridge_ns" link add "$port" type veth peer name eth0 netns "$n"
  ip -n "$bridge_ns" link set "$port" master "$bridge" up
  ip -n "$n" addr replace "$cidr" dev eth0
  ip -n "$n" link set eth0 up
}

# A pod's MAC: 0a:58 then its IPv4 address, as kemu sets it (the same address, the same MAC).
pod_mac() {
  local IFS=.
  # shellcheck disable=SC2086
  printf '0a:58:%02x:%02x:%02x:%02x' $1
}

# The node-side veth of a pod: "veth" + FNV-1a (32 bit) of the pod name, as kemu names it.
pod_veth() {
  local s=$1 h=2166136261 i c
  for ((i = 0; i < ${#s}; i++)); do
    c=$(printf '%d' "'${s:i:1}")
    h=$(( ((h ^ c) * 16777619) & 0xffffffff ))
  done
  printf 'veth%08x' "$h"
}

check_cluster_name() {
  [[ $1 =~ ^[a-z][a-z0-9]{0,11}$ ]] || { echo "cluster name '$1': 1-12 lower-case letters and digits, starting with a letter" >&2; exit 2; }
}
