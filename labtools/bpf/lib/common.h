// SPDX-License-Identifier: GPL-2.0
/* Headers, and the parse of Ethernet + IPv6 + TCP/UDP that every program starts with (Cilium: bpf/lib/common.h). */
#ifndef LABTOOLS_COMMON_H
#define LABTOOLS_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/seg6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define AF_INET6 10
#ifndef BPF_F_IPV6
#define BPF_F_IPV6 (1ULL << 7)
#endif

struct l4 {
	__u32 off;	/* L4 header offset from the start of the frame */
	__u32 csum_off;	/* checksum offset from the start of the frame */
	__u64 csum_flags;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 syn, ack, fin, rst;
};

/* Parse Ethernet + IPv6 + TCP/UDP without extension headers; 0 on success. */
static __always_inline int parse(struct __sk_buff *skb, struct ipv6hdr *ip6, struct l4 *l4)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *h = data + sizeof(*eth);

	if ((void *)(h + 1) > end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return -1;
	*ip6 = *h;
	l4->proto = h->nexthdr;
	l4->off = sizeof(*eth) + sizeof(*h);
	if (h->nexthdr == IPPROTO_TCP) {
		struct tcphdr *t = (void *)(h + 1);
		if ((void *)(t + 1) > end)
			return -1;
		l4->sport = t->source;
		l4->dport = t->dest;
		l4->csum_off = l4->off + offsetof(struct tcphdr, check);
		l4->csum_flags = 0;
		l4->syn = t->syn;
		l4->ack = t->ack;
		l4->fin = t->fin;
		l4->rst = t->rst;
		return 0;
	}
	if (h->nexthdr == IPPROTO_UDP) {
		struct udphdr *u = (void *)(h + 1);
		if ((void *)(u + 1) > end)
			return -1;
		l4->sport = u->source;
		l4->dport = u->dest;
		l4->csum_off = l4->off + offsetof(struct udphdr, check);
		l4->csum_flags = BPF_F_MARK_MANGLED_0;
		l4->syn = l4->ack = l4->fin = l4->rst = 0;
		return 0;
	}
	return -1;
}

#endif /* LABTOOLS_COMMON_H */
