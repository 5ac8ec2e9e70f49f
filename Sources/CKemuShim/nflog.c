// NFLOG (nfnetlink_log): the packets an nftables `log group N` statement hands to userspace.
// Opened here because the netlink structures and constants are C's; the messages are parsed in
// Swift (KemuSystem.PacketLog), bounds-checked, since a packet is outside input.
#include "CKemuShim.h"
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <arpa/inet.h>

static int nflog_config(int fd, uint16_t group, uint16_t family, struct nlattr *attr, const void *value, size_t length) {
    char buffer[128];
    memset(buffer, 0, sizeof buffer);
    struct nlmsghdr *header = (struct nlmsghdr *)buffer;
    header->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    header->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    struct nfgenmsg *gen = (struct nfgenmsg *)NLMSG_DATA(header);
    gen->nfgen_family = (uint8_t)family;
    gen->version = NFNETLINK_V0;
    gen->res_id = htons(group);
    struct nlattr *a = (struct nlattr *)((char *)gen + NLMSG_ALIGN(sizeof *gen));
    a->nla_type = attr->nla_type;
    a->nla_len = (uint16_t)(NLA_HDRLEN + length);
    memcpy((char *)a + NLA_HDRLEN, value, length);
    header->nlmsg_len = (uint32_t)(NLMSG_HDRLEN + NLMSG_ALIGN(sizeof *gen) + NLA_ALIGN(a->nla_len));
    if (send(fd, buffer, header->nlmsg_len, 0) < 0) return -1;
    char reply[256];
    ssize_t n = recv(fd, reply, sizeof reply, 0);
    if (n < (ssize_t)NLMSG_HDRLEN) return -1;
    struct nlmsghdr *r = (struct nlmsghdr *)reply;
    if (r->nlmsg_type == NLMSG_ERROR && (size_t)n >= NLMSG_HDRLEN + sizeof(struct nlmsgerr)) {
        struct nlmsgerr *e = (struct nlmsgerr *)NLMSG_DATA(r);
        if (e->error != 0) { errno = -e->error; return -1; }
    }
    return 0;
}

int kemu_nflog_open(unsigned short group, unsigned int copy_bytes) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
    if (fd < 0) return -1;
    struct sockaddr_nl local = { .nl_family = AF_NETLINK };
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) goto fail;
    struct nlattr cmd_attr = { .nla_type = NFULA_CFG_CMD };
    struct nfulnl_msg_config_cmd bind_cmd = { .command = NFULNL_CFG_CMD_BIND };
    if (nflog_config(fd, group, AF_INET, &cmd_attr, &bind_cmd, sizeof bind_cmd) < 0) goto fail;
    struct nlattr mode_attr = { .nla_type = NFULA_CFG_MODE };
    struct nfulnl_msg_config_mode mode = { .copy_range = htonl(copy_bytes), .copy_mode = NFULNL_COPY_PACKET };
    if (nflog_config(fd, group, AF_INET, &mode_attr, &mode, sizeof mode) < 0) goto fail;
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}
