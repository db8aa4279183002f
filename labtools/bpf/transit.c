// SPDX-License-Identifier: GPL-2.0
/* The worker's own transit time per packet, stamped in the kernel at the two ends of its path.
 *
 * request: in_request  (the uplink's ingress, tcx: before any classic tc program of the datapath and
 *                       before netfilter's PREROUTING)
 *          out_request (the pod veth's egress, classic tc at the last priority: after POSTROUTING and
 *                       after any datapath program at that hook)
 * reply:   in_reply    (the pod veth's ingress, tcx) -> out_reply (the uplink's egress, classic tc, last)
 *
 * A packet is matched across its two points by the client's address and port and its TCP sequence
 * number: the datapaths rewrite the service side (DNAT on the request, reverse NAT on the reply) and
 * never those. By default only the handshake is stamped (the request's SYN, the reply's SYN-ACK: the
 * packets that walk the service rules); with config[0] set (the loader's --established) every TCP
 * packet is. At the uplink a packet may be SRv6-encapsulated (outer IPv6 + SRH + inner IPv6): the inner
 * packet is the one matched, so the time through the worker includes decapsulation or encapsulation.
 *
 * Matched transits (ns) go to one sample array per direction, and beside each the packet's key (client
 * port << 32 | sequence number, host order) in a key array of the same index, so that a capture of the
 * same packets can be paired with the samples one by one; what enters and what leaves unmatched is
 * counted (counters[]).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <stdbool.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_SAMPLES 65536
#define NEXTHDR_ROUTING 43
#define NEXTHDR_IPV6 41
#define DIR_REQUEST 0
#define DIR_REPLY 1

enum counter {
	IN_REQUEST,		/* stamped at the uplink's ingress */
	IN_REPLY,		/* stamped at the pod veth's ingress */
	MATCHED_REQUEST,
	MATCHED_REPLY,
	UNMATCHED_REQUEST,	/* left the worker with no stamp from its way in */
	UNMATCHED_REPLY,
	DROPPED_SAMPLES,	/* matched, but the sample array was full */
	NR_COUNTERS,
};

/* config[0] != 0: stamp every TCP packet, not only the handshake (set by the loader). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} config SEC(".maps");

#ifndef TCX_NEXT
#define TCX_NEXT -1	/* enum tcx_action_base (linux 6.6); the same value as TC_ACT_UNSPEC */
#endif

struct key {
	__u8 client[16];
	__be16 port;
	__u8 dir;
	__u8 pad;
	__be32 seq;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct key);
	__type(value, __u64);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SAMPLES);
	__type(key, __u32);
	__type(value, __u64);
} request_ns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SAMPLES);
	__type(key, __u32);
	__type(value, __u64);
} reply_ns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SAMPLES);
	__type(key, __u32);
	__type(value, __u64);
} request_key SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SAMPLES);
	__type(key, __u32);
	__type(value, __u64);
} reply_key SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);

	if (c)
		__sync_fetch_and_add(c, 1);
}

/* The key of a TCP packet of `dir`, from the client's side of it; false if it is not one we stamp. */
static __always_inline bool packet_key(struct __sk_buff *skb, __u8 dir, bool request_side, struct key *k)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + sizeof(*eth);
	struct tcphdr *tcp;

	if ((void *)(ip6 + 1) > end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return false;
	if (ip6->nexthdr == NEXTHDR_ROUTING) {	/* SRv6: outer IPv6 + SRH, then the inner packet */
		__u8 *srh = (void *)(ip6 + 1);

		if ((void *)(srh + 2) > end || srh[0] != NEXTHDR_IPV6)
			return false;
		ip6 = (void *)srh + ((__u32)srh[1] + 1) * 8;
		if ((void *)(ip6 + 1) > end)
			return false;
	}
	if (ip6->nexthdr != IPPROTO_TCP)
		return false;
	tcp = (void *)(ip6 + 1);
	if ((void *)(tcp + 1) > end)
		return false;
	__u32 zero = 0, *all = bpf_map_lookup_elem(&config, &zero);

	if (!(all && *all)) {
		if (dir == DIR_REQUEST && !(tcp->syn && !tcp->ack))
			return false;
		if (dir == DIR_REPLY && !(tcp->syn && tcp->ack))
			return false;
	}
	/* The client is the request's source and the reply's destination. */
	if (request_side) {
		__builtin_memcpy(k->client, &ip6->saddr, 16);
		k->port = tcp->source;
	} else {
		__builtin_memcpy(k->client, &ip6->daddr, 16);
		k->port = tcp->dest;
	}
	k->dir = dir;
	k->pad = 0;
	k->seq = tcp->seq;
	return true;
}

static __always_inline int stamp_in(struct __sk_buff *skb, __u8 dir)
{
	struct key k;
	__u64 now = bpf_ktime_get_ns();

	if (packet_key(skb, dir, dir == DIR_REQUEST, &k)) {
		bpf_map_update_elem(&pending, &k, &now, BPF_ANY);
		count(dir == DIR_REQUEST ? IN_REQUEST : IN_REPLY);
	}
	return TCX_NEXT;	/* the datapath's own programs run next */
}

static __always_inline int stamp_out(struct __sk_buff *skb, __u8 dir)
{
	struct key k;
	__u64 now = bpf_ktime_get_ns(), *then, delta;
	__u32 idx, which = dir == DIR_REQUEST ? MATCHED_REQUEST : MATCHED_REPLY;
	__u64 *slot, *n;

	if (!packet_key(skb, dir, dir == DIR_REQUEST, &k))
		return TC_ACT_UNSPEC;
	then = bpf_map_lookup_elem(&pending, &k);
	if (!then) {
		count(dir == DIR_REQUEST ? UNMATCHED_REQUEST : UNMATCHED_REPLY);
		return TC_ACT_UNSPEC;
	}
	delta = now - *then;
	bpf_map_delete_elem(&pending, &k);
	n = bpf_map_lookup_elem(&counters, &which);
	if (!n)
		return TC_ACT_UNSPEC;
	idx = (__u32)__sync_fetch_and_add(n, 1);
	if (idx >= MAX_SAMPLES) {
		count(DROPPED_SAMPLES);
		return TC_ACT_UNSPEC;
	}
	slot = bpf_map_lookup_elem(dir == DIR_REQUEST ? (void *)&request_ns : (void *)&reply_ns, &idx);
	if (slot)
		*slot = delta;
	slot = bpf_map_lookup_elem(dir == DIR_REQUEST ? (void *)&request_key : (void *)&reply_key, &idx);
	if (slot)
		*slot = (__u64)bpf_ntohs(k.port) << 32 | bpf_ntohl(k.seq);
	return TC_ACT_UNSPEC;	/* continue: the packet goes on unchanged */
}

SEC("tc")
int in_request(struct __sk_buff *skb)
{
	return stamp_in(skb, DIR_REQUEST);
}

SEC("tc")
int out_request(struct __sk_buff *skb)
{
	return stamp_out(skb, DIR_REQUEST);
}

SEC("tc")
int in_reply(struct __sk_buff *skb)
{
	return stamp_in(skb, DIR_REPLY);
}

SEC("tc")
int out_reply(struct __sk_buff *skb)
{
	return stamp_out(skb, DIR_REPLY);
}

char LICENSE[] SEC("license") = "GPL";
