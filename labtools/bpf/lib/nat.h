// SPDX-License-Identifier: GPL-2.0
/* Address and port rewrites with their L4 checksum updates (Cilium: bpf/lib/nat.h, csum.h). */
#ifndef LABTOOLS_NAT_H
#define LABTOOLS_NAT_H

#include "common.h"

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

#endif /* LABTOOLS_NAT_H */
