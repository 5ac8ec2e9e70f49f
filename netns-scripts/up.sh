#!/usr/bin/env bash
# The network `kemu net up` builds, with iproute2 only. Idempotent: run it twice, get one cluster.
# Usage: up.sh CLUSTER [NODES]
source "$(dirname "$0")/common.sh"
cluster=${1:?usage: up.sh CLUSTER [NODES]}
nodes=${2:-2}
check_cluster_name "$cluster"
F=$(ns fabric)

# The emulated LAN: one bridge in its own namespace.
add_ns "$F"
no_bridge_netfilter "$F"
ip -n "$F" link set lo up
have_link "$F" br0 || ip -n "$F" link add br0 type bridge
ip -n "$F" link set br0 up

# host NAME IP: a namespace whose eth0 is plugged into the fabric bridge (its port is named NAME).
host() { plug "$F" br0 "$1" "$(ns "$1")" "$2/24"; }

host cp "$fabric_net.2"
host client "$fabric_net.3"
host lb "$fabric_net.4"
ip netns exec "$(ns lb)" sysctl -qw net.ipv4.tcp_tw_reuse=1
# An outside machine reaches load-balancer IPs through the lb host.
ip -n "$(ns client)" route replace "$lb_pool" via "$fabric_net.4" dev eth0 proto static

for ((i = 1; i <= nodes; i++)); do
  host "node-$i" "$fabric_net.$((10 + i))"
  n=$(ns "node-$i")
  ip netns exec "$n" sysctl -qw net.ipv4.ip_forward=1
  # The node's proxy may reuse its ports in TIME_WAIT for new connections to endpoints.
  ip netns exec "$n" sysctl -qw net.ipv4.tcp_tw_reuse=1
  # Pods (/32s) reach each other through the node: it must not redirect them to go direct.
  ip netns exec "$n" sysctl -qw net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0
  no_bridge_netfilter "$n"
  # The pod bridge: every pod of this node hangs off cbr0, whose address is their gateway.
  have_link "$n" cbr0 || ip -n "$n" link add cbr0 type bridge
  # Its own fixed MAC (0a:58 + the gateway's address): else it takes its lowest port's, which
  # changes as pods come and go, and the pods' ARP entries for their gateway go stale.
  ip -n "$n" link set cbr0 address "$(pod_mac "$pod_net.$i.1")"
  ip -n "$n" link set cbr0 up
  ip -n "$n" addr replace "$pod_net.$i.1/24" dev cbr0
  # The control plane reaches this node's pods through it.
  ip -n "$(ns cp)" route replace "$pod_net.$i.0/24" via "$fabric_net.$((10 + i))" dev eth0 proto static
  # Other nodes' pods are reached through those nodes.
  for ((j = 1; j <= nodes; j++)); do
    [ "$j" = "$i" ] && continue
    ip -n "$n" route replace "$pod_net.$j.0/24" via "$fabric_net.$((10 + j))" dev eth0 proto static
  done
done
echo "cluster $cluster: network up ($nodes nodes)"
