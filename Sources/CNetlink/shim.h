// The libnl-3 headers kemu uses (apt: libnl-3-dev libnl-route-3-dev; pkg-config libnl-route-3.0).
#ifndef KEMU_CNETLINK_SHIM_H
#define KEMU_CNETLINK_SHIM_H

#include <netlink/netlink.h>
#include <netlink/errno.h>
#include <netlink/cache.h>
#include <netlink/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/addr.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>
#include <netlink/route/nexthop.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/tc.h>
#include <netlink/route/qdisc/tbf.h>
#include <linux/if.h>
#include <linux/rtnetlink.h>
#include <linux/fib_rules.h>

#endif
