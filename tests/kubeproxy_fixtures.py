# ruff: noqa: E501
"""Expected kube-proxy output, derived from the kubernetes source (not from our renderer).

iptables: pkg/proxy/iptables/proxier.go (syncProxyRules, writeServiceToEndpointRules, portProtoHash,
servicePortEndpointChainName) and the IPv6 fixture of pkg/proxy/iptables/proxier_test.go
TestEnableLocalhostNodePortsIPv6 (verbatim below). nftables: pkg/proxy/nftables/proxier.go (setupNFTables,
syncProxyRules, hashAndTruncate) as of v1.34/v1.35, whose proxier_test.go baseRules this layout follows.
The example services: default/svc-00001 port "iperf" TCP 5201, NodePort 30000, eTP=Local, one local
endpoint; default/svc-00002 the same with NodePort 30001 and no endpoints at all.
"""

# pkg/proxy/iptables/proxier_test.go, TestEnableLocalhostNodePortsIPv6 (fake: mark 0x4000, no
# --random-fully, no-op local detector): ns1/svc1:p80, fd00:ab34::20:80, NodePort 30001, eTP=Local,
# endpoints ff06::c1 (remote) and ff06::c2 (local).
IPTABLES_UPSTREAM_IPV6 = """\
*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXT-XPGD46QRK7WJZT7O - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-LIGRYQQLSZN4UWQ5 - [0:0]
:KUBE-SEP-XJJ5QXWGJG344QDZ - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SVL-XPGD46QRK7WJZT7O - [0:0]
-A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp --dport 30001 -j KUBE-EXT-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d fd00:ab34::20 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS
-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "masquerade LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "route LOCAL traffic for ns1/svc1:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-EXT-XPGD46QRK7WJZT7O -j KUBE-SVL-XPGD46QRK7WJZT7O
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SEP-LIGRYQQLSZN4UWQ5 -m comment --comment ns1/svc1:p80 -s ff06::c1 -j KUBE-MARK-MASQ
-A KUBE-SEP-LIGRYQQLSZN4UWQ5 -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination [ff06::c1]:80
-A KUBE-SEP-XJJ5QXWGJG344QDZ -m comment --comment ns1/svc1:p80 -s ff06::c2 -j KUBE-MARK-MASQ
-A KUBE-SEP-XJJ5QXWGJG344QDZ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination [ff06::c2]:80
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> [ff06::c1]:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-LIGRYQQLSZN4UWQ5
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> [ff06::c2]:80" -j KUBE-SEP-XJJ5QXWGJG344QDZ
-A KUBE-SVL-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> [ff06::c2]:80" -j KUBE-SEP-XJJ5QXWGJG344QDZ
COMMIT
"""

# The restore input of a real node's first full sync for the two example services (mark 0x00004000,
# --random-fully, ClusterCIDR local detector with 2001:db8:1234:5678:8:2::/104, no nfacct objects).
IPTABLES_EXAMPLE = """\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-SERVICES -m comment --comment "default/svc-00002:iperf has no endpoints" -m tcp -p tcp -d 2001:db8:1234:5678:8:3::2 --dport 5201 -j REJECT
-A KUBE-EXTERNAL-SERVICES -m comment --comment "default/svc-00002:iperf has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30001 -j REJECT
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-EXT-MSGH745GYCVSHLJG - [0:0]
:KUBE-SVC-MSGH745GYCVSHLJG - [0:0]
:KUBE-SVL-MSGH745GYCVSHLJG - [0:0]
:KUBE-SEP-GQZY5VSZMQ5Z3CNA - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000
-A KUBE-SERVICES -m comment --comment "default/svc-00001:iperf cluster IP" -m tcp -p tcp -d 2001:db8:1234:5678:8:3::1 --dport 5201 -j KUBE-SVC-MSGH745GYCVSHLJG
-A KUBE-NODEPORTS -m comment --comment default/svc-00001:iperf -m tcp -p tcp --dport 30000 -j KUBE-EXT-MSGH745GYCVSHLJG
-A KUBE-SVC-MSGH745GYCVSHLJG -m comment --comment "default/svc-00001:iperf cluster IP" -m tcp -p tcp -d 2001:db8:1234:5678:8:3::1 --dport 5201 ! -s 2001:db8:1234:5678:8:2::/104 -j KUBE-MARK-MASQ
-A KUBE-EXT-MSGH745GYCVSHLJG -m comment --comment "pod traffic for default/svc-00001:iperf external destinations" -s 2001:db8:1234:5678:8:2::/104 -j KUBE-SVC-MSGH745GYCVSHLJG
-A KUBE-EXT-MSGH745GYCVSHLJG -m comment --comment "masquerade LOCAL traffic for default/svc-00001:iperf external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-MSGH745GYCVSHLJG -m comment --comment "route LOCAL traffic for default/svc-00001:iperf external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-MSGH745GYCVSHLJG
-A KUBE-EXT-MSGH745GYCVSHLJG -j KUBE-SVL-MSGH745GYCVSHLJG
-A KUBE-SVC-MSGH745GYCVSHLJG -m comment --comment "default/svc-00001:iperf -> [2001:db8:1234:5678:8:2:1:841]:5201" -j KUBE-SEP-GQZY5VSZMQ5Z3CNA
-A KUBE-SVL-MSGH745GYCVSHLJG -m comment --comment "default/svc-00001:iperf -> [2001:db8:1234:5678:8:2:1:841]:5201" -j KUBE-SEP-GQZY5VSZMQ5Z3CNA
-A KUBE-SEP-GQZY5VSZMQ5Z3CNA -m comment --comment default/svc-00001:iperf -s 2001:db8:1234:5678:8:2:1:841 -j KUBE-MARK-MASQ
-A KUBE-SEP-GQZY5VSZMQ5Z3CNA -m comment --comment default/svc-00001:iperf -m tcp -p tcp -j DNAT --to-destination [2001:db8:1234:5678:8:2:1:841]:5201
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS
COMMIT
"""

# Final state (knftables Fake.Dump style) for the two example services with --nodeport-addresses=primary
# (node IP 2001:db8:1234:5678::2), pod CIDR 2001:db8:1234:5678:8:2::/104, mark 0x00004000.
NFTABLES_EXAMPLE = """\
add table ip6 kube-proxy { comment "rules for kube-proxy" ; }
add set ip6 kube-proxy cluster-ips { type ipv6_addr ; comment "Active ClusterIPs" ; }
add set ip6 kube-proxy nodeport-ips { type ipv6_addr ; comment "IPs that accept NodePort traffic" ; }
add map ip6 kube-proxy firewall-ips { type ipv6_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
add map ip6 kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
add map ip6 kube-proxy no-endpoint-services { type ipv6_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
add map ip6 kube-proxy service-ips { type ipv6_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip6 kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
add chain ip6 kube-proxy cluster-ips-check
add chain ip6 kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip6 kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
add chain ip6 kube-proxy filter-forward { type filter hook forward priority 0 ; }
add chain ip6 kube-proxy filter-input { type filter hook input priority 0 ; }
add chain ip6 kube-proxy filter-output { type filter hook output priority 0 ; }
add chain ip6 kube-proxy firewall-check
add chain ip6 kube-proxy mark-for-masquerade
add chain ip6 kube-proxy masquerading
add chain ip6 kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip6 kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip6 kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip6 kube-proxy nodeport-endpoints-check
add chain ip6 kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add chain ip6 kube-proxy services
add chain ip6 kube-proxy service-endpoints-check
add rule ip6 kube-proxy cluster-ips-check ip6 daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip6 kube-proxy cluster-ips-check ip6 daddr { 2001:db8:1234:5678:8:3::/112 } drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip6 kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip6 kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip6 kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip6 kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip6 kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip6 kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip6 kube-proxy filter-output-pre-dnat ct state new jump firewall-check
add rule ip6 kube-proxy filter-output ct state new jump cluster-ips-check
add rule ip6 kube-proxy firewall-check ip6 daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip6 kube-proxy mark-for-masquerade mark set mark or 0x00004000
add rule ip6 kube-proxy masquerading mark and 0x00004000 == 0 return
add rule ip6 kube-proxy masquerading mark set mark xor 0x00004000
add rule ip6 kube-proxy masquerading masquerade fully-random
add rule ip6 kube-proxy nat-output jump services
add rule ip6 kube-proxy nat-postrouting jump masquerading
add rule ip6 kube-proxy nat-prerouting jump services
add rule ip6 kube-proxy nodeport-endpoints-check ip6 daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip6 kube-proxy reject-chain reject
add rule ip6 kube-proxy services ip6 daddr . meta l4proto . th dport vmap @service-ips
add rule ip6 kube-proxy services ip6 daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add element ip6 kube-proxy nodeport-ips { 2001:db8:1234:5678::2 }
add rule ip6 kube-proxy service-endpoints-check ip6 daddr . meta l4proto . th dport vmap @no-endpoint-services
add chain ip6 kube-proxy service-M75SJZSI-default/svc-00001/tcp/iperf
add rule ip6 kube-proxy service-M75SJZSI-default/svc-00001/tcp/iperf ip6 daddr 2001:db8:1234:5678:8:3::1 ip6 saddr != 2001:db8:1234:5678:8:2::/104 jump mark-for-masquerade
add rule ip6 kube-proxy service-M75SJZSI-default/svc-00001/tcp/iperf numgen random mod 1 vmap { 0 : goto endpoint-XEQ3LL2O-default/svc-00001/tcp/iperf__2001.db8.1234.5678.8.2.1.841/5201 }
add chain ip6 kube-proxy local-M75SJZSI-default/svc-00001/tcp/iperf
add rule ip6 kube-proxy local-M75SJZSI-default/svc-00001/tcp/iperf numgen random mod 1 vmap { 0 : goto endpoint-XEQ3LL2O-default/svc-00001/tcp/iperf__2001.db8.1234.5678.8.2.1.841/5201 }
add chain ip6 kube-proxy external-M75SJZSI-default/svc-00001/tcp/iperf
add rule ip6 kube-proxy external-M75SJZSI-default/svc-00001/tcp/iperf ip6 saddr 2001:db8:1234:5678:8:2::/104 goto service-M75SJZSI-default/svc-00001/tcp/iperf comment "short-circuit pod traffic"
add rule ip6 kube-proxy external-M75SJZSI-default/svc-00001/tcp/iperf fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip6 kube-proxy external-M75SJZSI-default/svc-00001/tcp/iperf fib saddr type local goto service-M75SJZSI-default/svc-00001/tcp/iperf comment "short-circuit local traffic"
add rule ip6 kube-proxy external-M75SJZSI-default/svc-00001/tcp/iperf goto local-M75SJZSI-default/svc-00001/tcp/iperf
add chain ip6 kube-proxy endpoint-XEQ3LL2O-default/svc-00001/tcp/iperf__2001.db8.1234.5678.8.2.1.841/5201
add rule ip6 kube-proxy endpoint-XEQ3LL2O-default/svc-00001/tcp/iperf__2001.db8.1234.5678.8.2.1.841/5201 ip6 saddr 2001:db8:1234:5678:8:2:1:841 jump mark-for-masquerade
add rule ip6 kube-proxy endpoint-XEQ3LL2O-default/svc-00001/tcp/iperf__2001.db8.1234.5678.8.2.1.841/5201 meta l4proto tcp dnat to [2001:db8:1234:5678:8:2:1:841]:5201
add element ip6 kube-proxy cluster-ips { 2001:db8:1234:5678:8:3::1 }
add element ip6 kube-proxy service-ips { 2001:db8:1234:5678:8:3::1 . tcp . 5201 : goto service-M75SJZSI-default/svc-00001/tcp/iperf }
add element ip6 kube-proxy service-nodeports { tcp . 30000 : goto external-M75SJZSI-default/svc-00001/tcp/iperf }
add element ip6 kube-proxy cluster-ips { 2001:db8:1234:5678:8:3::2 }
add element ip6 kube-proxy no-endpoint-services { 2001:db8:1234:5678:8:3::2 . tcp . 5201 comment "default/svc-00002:iperf" : goto reject-chain }
add element ip6 kube-proxy no-endpoint-nodeports { tcp . 30001 comment "default/svc-00002:iperf" : goto reject-chain }
"""
