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
 * One header per concern under lib/, as Cilium's bpf/lib: common (parse), drop (counted drop reasons),
 * lb (services), conntrack, nat (rewrites and checksums), srv6.
 */
#include "lib/common.h"
#include "lib/drop.h"
#include "lib/lb.h"
#include "lib/conntrack.h"
#include "lib/nat.h"
#include "lib/srv6.h"

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
		return drop(DROP_INVALID);
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
		return drop(DROP_IS_CLUSTER_IP);	/* a ClusterIP or the surrogate */

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
			return drop(DROP_NO_SERVICE);	/* e.g. eTP=Local without a local backend. As Cilium v1.13:
							 * lb6_local() drops, no ICMP (--service-no-backend-response,
							 * default reject, came in v1.15) */
		key.backend_slot = (bpf_get_prandom_u32() % svc->count) + 1;
		slot = bpf_map_lookup_elem(&lb6_services, &key);
		if (!slot)
			return drop(DROP_NO_BACKEND);
		backend_id = slot->backend_id;
	}
	be = bpf_map_lookup_elem(&lb6_backends, &backend_id);
	if (!be)
		return drop(DROP_NO_BACKEND);
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
		return drop(DROP_CSUM_L4);
	if (rewrite_port(skb, l4.off + offsetof(struct tcphdr, dest), l4.dport, be->port, &l4) < 0)
		return drop(DROP_CSUM_L4);

	ep = bpf_map_lookup_elem(&lxc6, be->address);
	if (!ep || ip6.hop_limit <= 1)
		return TC_ACT_OK;	/* let the stack route it (or send time-exceeded) */
	/* We forward it ourselves, so we age it like a router would. */
	__u8 hl = ip6.hop_limit - 1;
	bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, hop_limit), &hl, 1, 0);
	return bpf_redirect_neigh(ep->ifindex, NULL, 0, 0);
}

/* On the pod veth's ingress: reverse NAT of replies. It lets every packet continue (TC_ACT_UNSPEC, not
 * TC_ACT_OK) so that the CNI's program after it (cni.c, pref 2) still ages it. */
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
		return TC_ACT_UNSPEC;
	__builtin_memcpy(ct.saddr, &ip6.saddr, 16);
	__builtin_memcpy(ct.daddr, &ip6.daddr, 16);
	ct.sport = l4.sport;
	ct.dport = l4.dport;
	ct.proto = l4.proto;
	ct.dir = CT_DIR_REV;
	entry = ct_lookup(&ct);
	if (!entry)
		return TC_ACT_UNSPEC;	/* not a reply to a NodePort connection */
	ct_touch(entry, &l4);
	index = entry->rev_nat_index;
	nat = bpf_map_lookup_elem(&lb6_reverse_nat, &index);
	if (!nat)
		return TC_ACT_UNSPEC;
	if (rewrite_addr(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr), (__u8 *)&ip6.saddr, nat->address, &l4) < 0)
		return drop(DROP_CSUM_L4);
	if (rewrite_port(skb, l4.off + offsetof(struct tcphdr, source), l4.sport, nat->port, &l4) < 0)
		return drop(DROP_CSUM_L4);
	return TC_ACT_UNSPEC;
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
		return drop(DROP_SRV6_ENCAP);
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &outer, sizeof(outer), 0) < 0)
		return drop(DROP_SRV6_ENCAP);
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
		return drop(DROP_SRV6_ENCAP);
	if (fib.ifindex != skb->ifindex)
		return bpf_redirect(fib.ifindex, 0);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
