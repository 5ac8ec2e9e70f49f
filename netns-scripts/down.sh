#!/usr/bin/env bash
# Removes everything named after the cluster, as `kemu net down` does. Safe to run twice.
# Usage: down.sh CLUSTER
source "$(dirname "$0")/common.sh"
cluster=${1:?usage: down.sh CLUSTER}
check_cluster_name "$cluster"
prefix="kemu-$cluster-"

for n in $(ip netns list | awk '{print $1}' | grep "^$prefix" || true); do
  for pid in $(ip netns pids "$n"); do kill -KILL "$pid" 2>/dev/null || true; done
  ip netns del "$n"
done
for d in /etc/netns/"$prefix"*; do [ -e "$d" ] && rm -rf "$d"; done
rm -rf "/run/kemu/$cluster"
echo "cluster $cluster: removed"
