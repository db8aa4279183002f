// SPDX-License-Identifier: GPL-2.0
/* Connection tracking: entries per direction, Cilium's default lifetimes (Cilium: bpf/lib/conntrack.h). */
#ifndef LABTOOLS_CONNTRACK_H
#define LABTOOLS_CONNTRACK_H

#include "common.h"

#define CT_DIR_FWD 0
#define CT_DIR_REV 1

struct ct6_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u8 pad[2];
};

struct ct6_entry {
	__u64 expires;		/* bpf_ktime_get_ns() deadline; an expired entry counts as absent */
	__u32 backend_id;
	__u16 rev_nat_index;
	__u16 flags;		/* CT_CLOSING once a FIN or RST was seen */
};

#define CT_CLOSING 1

/* Lifetimes as Cilium's defaults (CT_CONNECTION_LIFETIME_TCP/NONTCP, CT_CLOSE_TIMEOUT); an RST ends
 * a connection at once, so its entries only linger for stray packets.
 *
 * Where this departs from Cilium v1.13 (bpf/lib/conntrack.h ct_update_timeout(), __ct_lookup(), ct_create6();
 * read at skmatti/cilium 5f7ac91): there a new TCP entry lives CT_SYN_TIMEOUT (60 s) until a packet without
 * SYN is seen, then 21,600 s; FIN and RST close only their own direction, and the 10 s CT_CLOSE_TIMEOUT
 * applies once both directions are closing (an RST before both SYNs closes both); there is no 1 s value;
 * Service entries (CT_SERVICE) have lifetimes of their own, with the same defaults. Here every TCP entry
 * gets 21,600 s from its first packet, any FIN 10 s and any RST 1 s. The measurements open a new connection
 * per transaction and end it with an RST, so a lifetime decides only how many entries the table holds
 * (here fewer than in Cilium), not what a lookup finds. */
#define NSEC 1000000000ULL
#define LIFETIME_TCP (21600 * NSEC)
#define LIFETIME_NONTCP (60 * NSEC)
#define LIFETIME_FIN (10 * NSEC)
#define LIFETIME_RST (1 * NSEC)

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct6_key);
	__type(value, struct ct6_entry);
} ct6 SEC(".maps");

static __always_inline __u64 lifetime(const struct l4 *l4)
{
	if (l4->proto != IPPROTO_TCP)
		return LIFETIME_NONTCP;
	return l4->rst ? LIFETIME_RST : l4->fin ? LIFETIME_FIN : LIFETIME_TCP;
}

/* The live entry for `key`, or NULL (an expired one is removed). */
static __always_inline struct ct6_entry *ct_lookup(struct ct6_key *key)
{
	struct ct6_entry *e = bpf_map_lookup_elem(&ct6, key);

	if (e && e->expires < bpf_ktime_get_ns()) {
		bpf_map_delete_elem(&ct6, key);
		return NULL;
	}
	return e;
}

/* Refresh a connection's entries after a packet: short after FIN or RST, long otherwise. */
static __always_inline void ct_touch(struct ct6_entry *e, const struct l4 *l4)
{
	__u64 deadline = bpf_ktime_get_ns() + lifetime(l4);

	/* Once closing, a connection never goes back to the long lifetime. */
	if (!(e->flags & CT_CLOSING) || deadline < e->expires)
		e->expires = deadline;
	if (l4->fin || l4->rst)
		e->flags |= CT_CLOSING;
}

#endif /* LABTOOLS_CONNTRACK_H */
