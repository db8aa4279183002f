// SPDX-License-Identifier: GPL-2.0
/* A tc (clsact) NodePort datapath for IPv6, modelled on Cilium's kube-proxy replacement.
 *
 * from_netdev   (ingress of the node's uplink): service lookup in lb6_services keyed like Cilium's
 *               lb6_key (address, port, slot, proto, scope); slot 0 is the frontend with the backend
 *               count and rev-NAT index; random backend slot; conntrack; DNAT with L4 checksum
 *               updates; redirect to the local endpoint's veth (bpf_redirect_neigh).
 * from_container (ingress of the pod's host-side veth): reverse NAT of replies via conntrack and
 *               lb6_reverse_nat, then back to the stack, which routes them out (Cilium's legacy
 *               host routing does the same).
 * srv6_egress   (egress of the uplink, optional): SRv6 encapsulation (outer IPv6 + one-segment SRH, as
 *               `ip route ... encap seg6 mode encap`) of packets to a prefix of srv6_policy, *after*
 *               netfilter POSTROUTING (so kube-proxy's reverse NAT has happened); Cilium encapsulates
 *               in BPF too (bpf/lib/srv6.h srv6_encapsulation).
 * SRv6 decapsulation (opt-in): from_netdev first removes the outer IPv6 header and SRH of a packet
 *               whose destination is a SID of srv6_sids (segments left 0, next header IPv6), as
 *               Cilium's tail_srv6_decap, then handles the inner packet like any other. srv6_sids is
 *               empty unless `labtools srv6 up --mode ebpf` writes the worker's SID into it.
 * Map layouts follow bpf/lib/common.h (lb6_key, lb6_service, lb6_backend, lb6_reverse_nat).
 */
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

#define SVC_FLAG_NODEPORT (1 << 1)
#define SVC_FLAG_EXT_LOCAL_SCOPE (1 << 2)
#define SVC_FLAG_ROUTABLE (1 << 6)
#define LB_LOOKUP_SCOPE_EXT 0
#define CT_DIR_FWD 0
#define CT_DIR_REV 1
#define IPV6_SRCRT_TYPE_4 4	/* Segment Routing Header */
#define SRV6_HOP_LIMIT 64	/* the outer header's, as the kernel's seg6 encap (ip6_dst_hoplimit) */
#define AF_INET6 10
#ifndef BPF_F_IPV6
#define BPF_F_IPV6 (1ULL << 7)
#endif

struct lb6_key {
	__u8 address[16];
	__be16 dport;		/* network byte order */
	__u16 backend_slot;	/* 0: the service frontend */
	__u8 proto;
	__u8 scope;
	__u8 pad[2];
};

struct lb6_service {
	__u32 backend_id;	/* slot > 0 */
	__u16 count;		/* slot 0: number of backends */
	__u16 rev_nat_index;
	__u8 flags;
	__u8 flags2;
	__u16 qcount;
};

struct lb6_backend {
	__u8 address[16];
	__be16 port;
	__u8 proto;
	__u8 flags;
	__u16 cluster_id;
	__u8 zone;
	__u8 pad;
};

struct lb6_reverse_nat {
	__u8 address[16];
	__be16 port;
} __attribute__((packed));

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
 * a connection at once, so its entries only linger for stray packets. */
#define NSEC 1000000000ULL
#define LIFETIME_TCP (21600 * NSEC)
#define LIFETIME_NONTCP (60 * NSEC)
#define LIFETIME_FIN (10 * NSEC)
#define LIFETIME_RST (1 * NSEC)

/* The modelled Cilium release's service lookup: lb_config[0] != 0 keys services by L4 protocol (Cilium
 * >= 1.17, --bpf-lb-proto-diff, default on); 0 looks them up with protocol 0, as Cilium 1.13's
 * lb6_fill_key() did ("proto: currently not used (set to 0)"): a UDP datagram to a TCP-only Service's
 * NodePort is then load-balanced like its TCP. The loader fills it from the datapath's version.
 * Departures from Cilium 1.13 on these packets: a Service without backends is dropped here as there
 * (lb6_local(): DROP_NO_SERVICE, no ICMP); conntrack uses its lifetimes (TCP 21600 s, other 60 s, 10 s after
 * a FIN) but not CT_SYN_TIMEOUT (60 s until the handshake completes): a SYN gets the TCP lifetime here. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} lb_config SEC(".maps");

struct endpoint {
	__u32 ifindex;	/* host-side veth of a local pod */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct lb6_key);
	__type(value, struct lb6_service);
} lb6_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct lb6_backend);
} lb6_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u16);
	__type(value, struct lb6_reverse_nat);
} lb6_reverse_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct ct6_key);
	__type(value, struct ct6_entry);
} ct6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct in6_addr);
	__type(value, struct endpoint);
} lxc6 SEC(".maps");

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

/* Rewrite a 16-byte address at `addr_off` and fix the L4 checksum (pseudo-header). */
static __always_inline int rewrite_addr(struct __sk_buff *skb, __u32 addr_off, const __u8 *old,
					const __u8 *new, const struct l4 *l4)
{
	__s64 diff = bpf_csum_diff((__be32 *)old, 16, (__be32 *)new, 16, 0);

	if (diff < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, addr_off, new, 16, 0) < 0)
		return -1;
	/* BPF_F_IPV6 (6.16+) keeps skb->csum right under CHECKSUM_COMPLETE; older kernels reject it. */
	if (bpf_l4_csum_replace(skb, l4->csum_off, 0, diff, BPF_F_PSEUDO_HDR | BPF_F_IPV6 | l4->csum_flags) < 0 &&
	    bpf_l4_csum_replace(skb, l4->csum_off, 0, diff, BPF_F_PSEUDO_HDR | l4->csum_flags) < 0)
		return -1;
	return 0;
}

static __always_inline int rewrite_port(struct __sk_buff *skb, __u32 port_off, __be16 old, __be16 new,
					const struct l4 *l4)
{
	if (old == new)
		return 0;
	if (bpf_l4_csum_replace(skb, l4->csum_off, old, new, sizeof(new) | l4->csum_flags) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, port_off, &new, sizeof(new), 0);
}

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

SEC("tc")
int from_netdev(struct __sk_buff *skb)
{
	struct ipv6hdr ip6;
	struct l4 l4;
	struct lb6_key key = {};
	struct ct6_key ct = {};
	struct ct6_entry *known, entry = {};
	struct lb6_service *svc, *slot;
	struct lb6_backend *be;
	struct endpoint *ep;
	__u32 backend_id;
	int decap = srv6_decap(skb);

	if (decap < 0)
		return TC_ACT_SHOT;	/* Cilium: DROP_INVALID */
	if (parse(skb, &ip6, &l4) < 0)
		return TC_ACT_OK;	/* not TCP/UDP over plain IPv6: not ours (Cilium: DROP_UNKNOWN_L4 -> pass) */

	__builtin_memcpy(key.address, &ip6.daddr, 16);
	key.dport = l4.dport;
	{
		__u32 zero = 0, *proto_diff = bpf_map_lookup_elem(&lb_config, &zero);

		key.proto = proto_diff && *proto_diff ? l4.proto : 0;
	}
	key.scope = LB_LOOKUP_SCOPE_EXT;	/* NodePort traffic always uses the external scope */
	svc = bpf_map_lookup_elem(&lb6_services, &key);
	if (!svc && key.proto) {	/* Cilium >= 1.17 lb6_lookup_service(): fall back to a protocol-ANY entry */
		key.proto = 0;
		svc = bpf_map_lookup_elem(&lb6_services, &key);
	}
	if (!svc) {
		/* Not for a service. A new connection straight to a local pod supersedes any old NodePort
		 * connection whose reply tuple it reuses, or its replies would be reverse-NATed. */
		if (l4.syn && !l4.ack && bpf_map_lookup_elem(&lxc6, &ip6.daddr)) {
			struct ct6_key stale = {};

			__builtin_memcpy(stale.saddr, &ip6.daddr, 16);
			__builtin_memcpy(stale.daddr, &ip6.saddr, 16);
			stale.sport = l4.dport;
			stale.dport = l4.sport;
			stale.proto = l4.proto;
			stale.dir = CT_DIR_REV;
			bpf_map_delete_elem(&ct6, &stale);
		}
		return TC_ACT_OK;
	}
	if (!(svc->flags & SVC_FLAG_ROUTABLE))
		return TC_ACT_SHOT;	/* a ClusterIP or the surrogate: DROP_IS_CLUSTER_IP */

	__builtin_memcpy(ct.saddr, &ip6.saddr, 16);
	__builtin_memcpy(ct.daddr, &ip6.daddr, 16);
	ct.sport = l4.sport;
	ct.dport = l4.dport;
	ct.proto = l4.proto;
	ct.dir = CT_DIR_FWD;
	known = ct_lookup(&ct);
	if (known && l4.syn && !l4.ack)
		known = NULL;	/* the client reuses the tuple for a new connection: balance it afresh */
	if (known) {
		backend_id = known->backend_id;
		ct_touch(known, &l4);
	} else {
		if (svc->count == 0)
			return TC_ACT_SHOT;	/* eTP=Local without a local backend: DROP_NO_SERVICE */
		key.backend_slot = (bpf_get_prandom_u32() % svc->count) + 1;
		slot = bpf_map_lookup_elem(&lb6_services, &key);
		if (!slot)
			return TC_ACT_SHOT;
		backend_id = slot->backend_id;
	}
	be = bpf_map_lookup_elem(&lb6_backends, &backend_id);
	if (!be)
		return TC_ACT_SHOT;
	if (!known) {
		struct ct6_key rev = {};

		entry.backend_id = backend_id;
		entry.rev_nat_index = svc->rev_nat_index;
		entry.expires = bpf_ktime_get_ns() + lifetime(&l4);
		bpf_map_update_elem(&ct6, &ct, &entry, BPF_ANY);
		__builtin_memcpy(rev.saddr, be->address, 16);
		__builtin_memcpy(rev.daddr, &ip6.saddr, 16);
		rev.sport = be->port;
		rev.dport = l4.sport;
		rev.proto = l4.proto;
		rev.dir = CT_DIR_REV;
		bpf_map_update_elem(&ct6, &rev, &entry, BPF_ANY);
	}

	/* DNAT: destination address, then port, each with its checksum update. */
	if (rewrite_addr(skb, ETH_HLEN + offsetof(struct ipv6hdr, daddr), (__u8 *)&ip6.daddr, be->address, &l4) < 0)
		return TC_ACT_SHOT;
	if (rewrite_port(skb, l4.off + offsetof(struct tcphdr, dest), l4.dport, be->port, &l4) < 0)
		return TC_ACT_SHOT;

	ep = bpf_map_lookup_elem(&lxc6, be->address);
	if (!ep || ip6.hop_limit <= 1)
		return TC_ACT_OK;	/* let the stack route it (or send time-exceeded) */
	/* We forward it ourselves, so we age it like a router would. */
	__u8 hl = ip6.hop_limit - 1;
	bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, hop_limit), &hl, 1, 0);
	return bpf_redirect_neigh(ep->ifindex, NULL, 0, 0);
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	struct ipv6hdr ip6;
	struct l4 l4;
	struct ct6_key ct = {};
	struct ct6_entry *entry;
	struct lb6_reverse_nat *nat;
	__u16 index;

	if (parse(skb, &ip6, &l4) < 0)
		return TC_ACT_OK;
	__builtin_memcpy(ct.saddr, &ip6.saddr, 16);
	__builtin_memcpy(ct.daddr, &ip6.daddr, 16);
	ct.sport = l4.sport;
	ct.dport = l4.dport;
	ct.proto = l4.proto;
	ct.dir = CT_DIR_REV;
	entry = ct_lookup(&ct);
	if (!entry)
		return TC_ACT_OK;	/* not a reply to a NodePort connection */
	ct_touch(entry, &l4);
	index = entry->rev_nat_index;
	nat = bpf_map_lookup_elem(&lb6_reverse_nat, &index);
	if (!nat)
		return TC_ACT_OK;
	if (rewrite_addr(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr), (__u8 *)&ip6.saddr, nat->address, &l4) < 0)
		return TC_ACT_SHOT;
	if (rewrite_port(skb, l4.off + offsetof(struct tcphdr, source), l4.sport, nat->port, &l4) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

/* SRv6 encapsulation on the uplink's egress, after the stack (and netfilter) is done with the packet. */
SEC("tc")
int srv6_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *h = data + sizeof(*eth);
	struct srv6_policy_key key = {.prefixlen = 128};
	struct srv6_policy_value *pol;
	struct srv6_outer outer = {};
	struct bpf_fib_lookup fib = {};
	__u32 inner_len;
	int rc;

	if ((void *)(h + 1) > end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return TC_ACT_OK;
	__builtin_memcpy(key.addr, &h->daddr, 16);
	pol = bpf_map_lookup_elem(&srv6_policy, &key);
	if (!pol)
		return TC_ACT_OK;
	inner_len = skb->len - ETH_HLEN;
	if (inner_len + sizeof(outer) - sizeof(outer.ip6) > 0xffff)
		return TC_ACT_OK;	/* a jumbogram (BIG TCP) cannot get a plain outer header */
	/* Version, traffic class and flow label copied from the inner header (net.ipv6.seg6_flowlabel=0). */
	*(__be32 *)&outer.ip6 = *(__be32 *)h;
	outer.ip6.payload_len = bpf_htons(inner_len + sizeof(outer) - sizeof(outer.ip6));
	outer.ip6.nexthdr = IPPROTO_ROUTING;
	outer.ip6.hop_limit = SRV6_HOP_LIMIT;
	__builtin_memcpy(&outer.ip6.saddr, pol->src, 16);
	__builtin_memcpy(&outer.ip6.daddr, pol->sid, 16);
	outer.nexthdr = IPPROTO_IPV6;
	outer.hdrlen = 2;	/* one segment: (8 + 16) / 8 - 1 */
	outer.type = IPV6_SRCRT_TYPE_4;
	__builtin_memcpy(outer.segment, pol->sid, 16);
	if (bpf_skb_adjust_room(skb, sizeof(outer), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &outer, sizeof(outer), 0) < 0)
		return TC_ACT_SHOT;
	/* The outer destination's next hop (Cilium: fib lookup after encapsulation). */
	fib.family = AF_INET6;
	fib.ifindex = skb->ifindex;
	__builtin_memcpy(fib.ipv6_src, pol->src, 16);
	__builtin_memcpy(fib.ipv6_dst, pol->sid, 16);
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return TC_ACT_OK;	/* e.g. no neighbour entry yet: keep the inner packet's next hop */
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), fib.dmac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), fib.smac, ETH_ALEN, 0) < 0)
		return TC_ACT_SHOT;
	if (fib.ifindex != skb->ifindex)
		return bpf_redirect(fib.ifindex, 0);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
