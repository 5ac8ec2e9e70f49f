#!/usr/bin/env bash
# Every namespace of a cluster: its links, addresses and routes, as `kemu net status` shows them.
# Usage: status.sh CLUSTER
source "$(dirname "$0")/common.sh"
cluster=${1:?usage: status.sh CLUSTER}
check_cluster_name "$cluster"
for n in $(ip netns list | awk '{print $1}' | grep "^kemu-$cluster-" | sort); do
  echo "== $n"
  ip -n "$n" -br link show | grep -v '^lo '
  ip -n "$n" -4 -br addr show | grep -v '^lo '
  ip -n "$n" route show | sed 's/^/route: /'
done
