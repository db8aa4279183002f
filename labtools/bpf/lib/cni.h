// SPDX-License-Identifier: GPL-2.0
/* The pod side of a Cilium-like CNI, as Cilium routes to and from an endpoint with legacy host routing and
 * without endpoint routes: every routed packet to or from the pod is aged once more, on the node, by the
 * BPF program on the pod's veth (Cilium: ipv6_l3() in bpf/lib/l3.h decrements through ipv6_dec_hoplimit();
 * host -> pod from ipv6_local_delivery(), pod -> stack from handle_ipv6_from_lxc()'s pass_to_stack), and a
 * packet whose hop limit runs out is answered with an ICMPv6 time exceeded from the node's router address
 * (bpf/lib/icmp6.h, icmp6_send_time_exceeded()). Link-local and multicast traffic (neighbour discovery,
 * whose hop limit must stay 255) is not routed, so it is left alone. */
#ifndef LABTOOLS_CNI_H
#define LABTOOLS_CNI_H

#include <linux/icmpv6.h>
#include "common.h"
#include "drop.h"

struct cni_config {
	__u8 router_ip[16];	/* the source of the node's ICMPv6 errors (Cilium: ROUTER_IP, cilium_host's) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cni_config);
} cni_config SEC(".maps");

/* Routed unicast: neither address link-local (fe80::/10) nor the destination multicast (ff00::/8). */
static __always_inline int routed(const struct ipv6hdr *ip6)
{
	const __u8 *s = ip6->saddr.in6_u.u6_addr8, *d = ip6->daddr.in6_u.u6_addr8;

	return !(s[0] == 0xfe && (s[1] & 0xc0) == 0x80) && !(d[0] == 0xfe && (d[1] & 0xc0) == 0x80) && d[0] != 0xff;
}

/* The ICMPv6 time exceeded (type 3, code 0) that replaces the packet, as Cilium v1.13 builds it
 * (bpf/lib/icmp6.h, __icmp6_send_time_exceeded and icmp6_send_reply; read at skmatti/cilium 5f7ac91): from
 * the router address to the packet's source, quoting the packet's IPv6 header and its first 8 L4 bytes (UDP,
 * ICMPv6) or 20 (TCP, the header without options); any other L4 is dropped (DROP_UNKNOWN_L4). It goes back
 * the way the packet came (`redirect_flags`: BPF_F_INGRESS into the node's stack, as Cilium's redirect_self()
 * on cilium_host ends up there; 0 out of the veth to the pod). One departure: Cilium keeps the invoking
 * packet's hop limit (<= 1) in the new header, which the node then cannot forward; here it is 64. */
struct time_exceeded {
	struct ipv6hdr ip6;
	struct icmp6hdr icmp;
	struct ipv6hdr quoted;
	__u8 l4[20];
};

static __always_inline __u16 fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

static __always_inline int send_time_exceeded(struct __sk_buff *skb, __u64 redirect_flags)
{
	struct time_exceeded msg = {};
	struct ethhdr eth;
	__u32 key = 0, quote;
	struct cni_config *cfg = bpf_map_lookup_elem(&cni_config, &key);
	struct {
		__u8 saddr[16], daddr[16];
		__be32 len;
		__u8 zero[3], nexthdr;
	} pseudo = {};

	if (!cfg || bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, &msg.quoted, sizeof(msg.quoted)))
		return drop(DROP_INVALID);
	switch (msg.quoted.nexthdr) {
	case IPPROTO_TCP:
		quote = 20;
		break;
	case IPPROTO_UDP:
	case IPPROTO_ICMPV6:
		quote = 8;
		break;
	default:
		return drop(DROP_UNKNOWN_L4);
	}
	if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(struct ipv6hdr), msg.l4, quote == 20 ? 20 : 8))
		return drop(DROP_INVALID);
	__u32 payload = sizeof(msg.icmp) + sizeof(msg.quoted) + quote;	/* 56 or 68 */
	msg.ip6.version = 6;
	msg.ip6.payload_len = bpf_htons(payload);
	msg.ip6.nexthdr = IPPROTO_ICMPV6;
	msg.ip6.hop_limit = 64;
	__builtin_memcpy(&msg.ip6.saddr, cfg->router_ip, 16);
	msg.ip6.daddr = msg.quoted.saddr;
	msg.icmp.icmp6_type = ICMPV6_TIME_EXCEED;
	msg.icmp.icmp6_code = ICMPV6_EXC_HOPLIMIT;
	__builtin_memcpy(pseudo.saddr, &msg.ip6.saddr, 16);
	__builtin_memcpy(pseudo.daddr, &msg.ip6.daddr, 16);
	pseudo.len = bpf_htonl(payload);
	pseudo.nexthdr = IPPROTO_ICMPV6;
	__s64 sum = bpf_csum_diff(NULL, 0, (__be32 *)&pseudo, sizeof(pseudo), 0);
	if (quote == 20)
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&msg.icmp, 68, sum);
	else
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&msg.icmp, 56, sum);
	msg.icmp.icmp6_cksum = fold(sum);
	__u8 mac[ETH_ALEN];	/* back where it came from */
	__builtin_memcpy(mac, eth.h_source, ETH_ALEN);
	__builtin_memcpy(eth.h_source, eth.h_dest, ETH_ALEN);
	__builtin_memcpy(eth.h_dest, mac, ETH_ALEN);
	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(msg.ip6) + payload, 0) ||
	    bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0))
		return drop(DROP_INVALID);
	if (quote == 20 ? bpf_skb_store_bytes(skb, ETH_HLEN, &msg, sizeof(msg), BPF_F_INVALIDATE_HASH) :
			  bpf_skb_store_bytes(skb, ETH_HLEN, &msg, sizeof(msg) - 12, BPF_F_INVALIDATE_HASH))
		return drop(DROP_INVALID);
	return bpf_redirect(skb->ifindex, redirect_flags);
}

/* Age a routed IPv6 packet by one hop (ipv6_dec_hoplimit); at hop limit 1 or less, answer it with time
 * exceeded instead. A packet it passes goes on to the interface's next tc program (TC_ACT_UNSPEC): the
 * transit probe stamps after it. */
static __always_inline int cni_l3(struct __sk_buff *skb, __u64 redirect_flags)
{
	struct ipv6hdr ip6;

	if (skb->protocol != bpf_htons(ETH_P_IPV6) || bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) ||
	    !routed(&ip6))
		return TC_ACT_UNSPEC;
	if (ip6.hop_limit <= 1)
		return send_time_exceeded(skb, redirect_flags);
	__u8 hl = ip6.hop_limit - 1;	/* no L4 checksum covers the hop limit */
	bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, hop_limit), &hl, 1, 0);
	return TC_ACT_UNSPEC;
}

#endif /* LABTOOLS_CNI_H */
