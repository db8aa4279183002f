// SPDX-License-Identifier: MIT
/* labtools-udp-flood: new UDP flows as fast as one core can send them (the udp-pps metric).
 *
 *   labtools-udp-flood SRC_PREFIX DST PORT COUNT
 *
 * Sends COUNT UDP datagrams to [DST]:PORT, each from a source address and port never used before,
 * so that every packet creates a new conntrack (or eBPF CT) entry wherever it is tracked. Sources
 * are SRC_PREFIX's /64 with a random interface identifier per run, and ports 1024..61023 cycling
 * under it. The raw socket (IPPROTO_RAW, the IPv6 header written here) is what allows those source
 * addresses without configuring any of them; nothing needs to reply. Sent in sendmmsg batches.
 * Prints one JSON object: sent, errors, elapsed_s, send_pps.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip6.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD 18 /* a 64-byte frame on Ethernet: 14 + 40 + 8 + 18 - 16 of padding rounding */
#define BATCH 64
#define PORTS 60000

struct pkt {
	struct ip6_hdr ip;
	struct udphdr udp;
	char data[PAYLOAD];
} __attribute__((packed));

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t sum16(const void *p, size_t n, uint32_t s)
{
	const uint16_t *w = p;
	for (; n > 1; n -= 2)
		s += *w++;
	if (n)
		s += *(const uint8_t *)w;
	return s;
}

static uint16_t udp_csum(const struct pkt *p)
{
	uint32_t s = sum16(&p->ip.ip6_src, 32, 0);
	s += htons(IPPROTO_UDP) + p->udp.len;
	s = sum16(&p->udp, sizeof(p->udp) + PAYLOAD, s);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	uint16_t c = ~s;
	return c ? c : 0xffff;
}

int main(int argc, char **argv)
{
	struct sockaddr_in6 dst = {.sin6_family = AF_INET6};
	struct in6_addr src;
	uint64_t salt;
	int fd;

	if (argc != 5) {
		fprintf(stderr, "usage: %s SRC_PREFIX DST PORT COUNT\n", argv[0]);
		return 2;
	}
	long count = atol(argv[4]);
	int port = atoi(argv[3]);
	if (inet_pton(AF_INET6, argv[1], &src) != 1 || inet_pton(AF_INET6, argv[2], &dst.sin6_addr) != 1) {
		fprintf(stderr, "labtools-udp-flood: bad IPv6 address %s or %s\n", argv[1], argv[2]);
		return 2;
	}
	if (count < 1 || port < 1 || port > 65535) {
		fprintf(stderr, "labtools-udp-flood: COUNT must be >= 1 and PORT in 1..65535\n");
		return 2;
	}
	fd = open("/dev/urandom", O_RDONLY);
	if (fd < 0 || read(fd, &salt, sizeof(salt)) != sizeof(salt)) {
		perror("labtools-udp-flood: /dev/urandom");
		return 1;
	}
	close(fd);
	int s = socket(AF_INET6, SOCK_RAW, IPPROTO_RAW);
	if (s < 0) {
		perror("labtools-udp-flood: raw socket (needs CAP_NET_RAW)");
		return 1;
	}

	static struct pkt pkts[BATCH];
	struct iovec iov[BATCH];
	struct mmsghdr msgs[BATCH];
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		struct pkt *p = &pkts[i];
		p->ip.ip6_flow = htonl(6u << 28);
		p->ip.ip6_plen = htons(sizeof(p->udp) + PAYLOAD);
		p->ip.ip6_nxt = IPPROTO_UDP;
		p->ip.ip6_hlim = 64;
		p->ip.ip6_src = src;
		p->ip.ip6_dst = dst.sin6_addr;
		p->udp.dest = htons(port);
		p->udp.len = htons(sizeof(p->udp) + PAYLOAD);
		memcpy(p->data, "labtools-udp-flood", PAYLOAD);
		iov[i] = (struct iovec){.iov_base = p, .iov_len = sizeof(*p)};
		msgs[i].msg_hdr = (struct msghdr){.msg_name = &dst, .msg_namelen = sizeof(dst), .msg_iov = &iov[i],
						  .msg_iovlen = 1};
	}

	long sent = 0, errors = 0;
	uint64_t start = now_ns();
	while (sent + errors < count) {
		int n = count - sent - errors < BATCH ? (int)(count - sent - errors) : BATCH;
		for (int i = 0; i < n; i++) {
			long k = sent + errors + i;
			uint64_t iid = salt + (uint64_t)(k / PORTS);
			struct pkt *p = &pkts[i];
			uint32_t hi = htonl(iid >> 32), lo = htonl((uint32_t)iid);
			memcpy(&p->ip.ip6_src.s6_addr[8], &hi, 4);
			memcpy(&p->ip.ip6_src.s6_addr[12], &lo, 4);
			p->udp.source = htons(1024 + k % PORTS);
			p->udp.check = 0;
			p->udp.check = udp_csum(p);
		}
		int r = sendmmsg(s, msgs, n, 0);
		if (r < 0) {
			if (errno != ENOBUFS && errno != EAGAIN) {
				perror("labtools-udp-flood: sendmmsg");
				return 1;
			}
			errors++; /* the datagram is lost; the next one uses the next flow */
			continue;
		}
		sent += r;
	}
	double elapsed = (now_ns() - start) / 1e9;
	printf("{\"sent\": %ld, \"errors\": %ld, \"elapsed_s\": %.6f, \"send_pps\": %.1f}\n", sent, errors, elapsed,
	       sent / elapsed);
	return 0;
}
