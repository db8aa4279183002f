// SPDX-License-Identifier: GPL-2.0
/* Services, backends and reverse NAT: the maps and layouts of Cilium's bpf/lib/lb.h and common.h. */
#ifndef LABTOOLS_LB_H
#define LABTOOLS_LB_H

#include "common.h"

#define SVC_FLAG_NODEPORT (1 << 1)
#define SVC_FLAG_EXT_LOCAL_SCOPE (1 << 2)
#define SVC_FLAG_ROUTABLE (1 << 6)
#define LB_LOOKUP_SCOPE_EXT 0

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
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct in6_addr);
	__type(value, struct endpoint);
} lxc6 SEC(".maps");

#endif /* LABTOOLS_LB_H */
