// SPDX-License-Identifier: GPL-2.0
/* SRv6: local SIDs that decapsulate, the encapsulation policy and its outer headers (Cilium: bpf/lib/srv6.h). */
#ifndef LABTOOLS_SRV6_H
#define LABTOOLS_SRV6_H

#include "common.h"

#define IPV6_SRCRT_TYPE_4 4	/* Segment Routing Header */
#define SRV6_HOP_LIMIT 64	/* the outer header's, as the kernel's seg6 encap (ip6_dst_hoplimit) */

/* SRv6: the node's local SIDs that decapsulate (End.DT6-like; Cilium's cilium_srv6_sid map: SID -> VRF). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct in6_addr);
	__type(value, __u32);
} srv6_sids SEC(".maps");

/* SRv6 encapsulation policy: destination prefix -> (segment, outer source); Cilium's cilium_srv6_policy. */
struct srv6_policy_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct srv6_policy_value {
	__u8 sid[16];
	__u8 src[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct srv6_policy_key);
	__type(value, struct srv6_policy_value);
} srv6_policy SEC(".maps");

/* The outer headers the encapsulation inserts: IPv6 + an SRH with one segment (8 + 16 bytes). */
struct srv6_outer {
	struct ipv6hdr ip6;
	__u8 nexthdr;
	__u8 hdrlen;
	__u8 type;
	__u8 segments_left;
	__u8 last_entry;
	__u8 flags;
	__u16 tag;
	__u8 segment[16];
};

/* Cilium's srv6_decapsulation for a packet to one of our SIDs: 0 if it is not SRv6 for us, 1 once the
 * outer IPv6 header and the SRH are gone (the frame then carries the inner packet), -1 to drop. */
static __always_inline int srv6_decap(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *h = data + sizeof(*eth);
	struct ipv6_sr_hdr *srh = (void *)(h + 1);
	struct in6_addr dst;
	__s32 shrink;

	if ((void *)(srh + 1) > end || eth->h_proto != bpf_htons(ETH_P_IPV6) || h->nexthdr != IPPROTO_ROUTING)
		return 0;
	__builtin_memcpy(&dst, &h->daddr, sizeof(dst));
	if (!bpf_map_lookup_elem(&srv6_sids, &dst))
		return 0;	/* a routing header, but not to our SID: the stack's business */
	/* Only the last segment (End.DT6 semantics) with an inner IPv6 packet, like Cilium. */
	if (srh->type != IPV6_SRCRT_TYPE_4 || srh->segments_left != 0 || srh->nexthdr != IPPROTO_IPV6)
		return -1;
	shrink = sizeof(*h) + ((__s32)srh->hdrlen + 1) * 8;
	if ((void *)h + shrink + sizeof(struct ipv6hdr) > end)
		return -1;
	if (bpf_skb_adjust_room(skb, -shrink, BPF_ADJ_ROOM_MAC, 0) < 0)
		return -1;
	return 1;
}

#endif /* LABTOOLS_SRV6_H */
