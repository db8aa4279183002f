// SPDX-License-Identifier: GPL-2.0
/* The Cilium-like CNI attachment of a pod (`labtools lab up --cni cilium`, lib/cni.h): on the host side of the
 * pod's veth, `to_container` at egress (node -> pod) and `from_container_cni` at ingress (pod -> node, after the
 * eBPF datapath's own `from_container`, which lets the packet continue). It runs under every service datapath,
 * as Cilium is the CNI in both of the thesis' modes. */
#include "lib/cni.h"

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	return cni_l3(skb, BPF_F_INGRESS);	/* an error goes back into the node's stack */
}

SEC("tc")
int from_container_cni(struct __sk_buff *skb)
{
	return cni_l3(skb, 0);	/* an error goes back out to the pod */
}

char LICENSE[] SEC("license") = "GPL";
