// libnftables, nft's own library (apt: libnftables-dev; pkg-config libnftables): rulesets given
// in nft's language, applied as one transaction.
#ifndef KEMU_CNFTABLES_SHIM_H
#define KEMU_CNFTABLES_SHIM_H

#include <nftables/libnftables.h>

#endif
