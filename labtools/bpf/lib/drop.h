// SPDX-License-Identifier: GPL-2.0
/* Counted drops: every packet a program drops is counted by reason, as Cilium's bpf/lib/drop.h
 * (send_drop_notify) counts them in its metrics map. `labtools.datapaths.ebpf.drops()` reads the counters;
 * the reasons keep Cilium's names (bpf/lib/common.h DROP_*) where the situation is Cilium's. */
#ifndef LABTOOLS_DROP_H
#define LABTOOLS_DROP_H

#include "common.h"

enum drop_reason {
	DROP_INVALID = 1,	/* malformed: SRv6 not at its last segment or without an inner IPv6 packet; or
				 * a packet the CNI could not read or rewrite into its time exceeded */
	DROP_IS_CLUSTER_IP,	/* a ClusterIP reached from outside the node */
	DROP_NO_SERVICE,	/* a Service without a (local) backend */
	DROP_NO_BACKEND,	/* a backend slot or backend id without its entry (a map being rewritten) */
	DROP_CSUM_L4,		/* an address or port rewrite or its checksum update failed */
	DROP_SRV6_ENCAP,	/* the SRv6 outer headers could not be inserted */
	DROP_UNKNOWN_L4,	/* a spent packet that is not TCP, UDP or ICMPv6: no time exceeded for it (cni.h) */
	__DROP_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, __DROP_MAX);
	__type(key, __u32);	/* an array's key must be a BTF int: the enum is in drop()'s signature */
	__type(value, __u64);
} drops SEC(".maps");

/* Count the drop and return the verdict that drops the packet. Not inlined: a BPF-to-BPF call on the drop
 * path only, and its signature puts enum drop_reason into the object's BTF (checked by the tests). */
static __attribute__((noinline)) int drop(enum drop_reason reason)
{
	__u32 key = reason;
	__u64 *n = bpf_map_lookup_elem(&drops, &key);

	if (n)
		*n += 1;	/* per CPU: no atomics needed */
	return TC_ACT_SHOT;
}

#endif /* LABTOOLS_DROP_H */
