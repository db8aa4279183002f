// SPDX-License-Identifier: MIT
/* labtools-crr: connection setup latency, one new TCP connection per transaction (netperf TCP_CRR style).
 *
 *   labtools-crr serve PORT                 accept, read 1 byte, write 1 byte, close; forever. Also binds
 *                                           UDP PORT and never reads it: udp-pps datagrams count on the
 *                                           interface and drop at the full socket buffer, which costs
 *                                           less than the ICMP error an unbound port would send.
 *   labtools-crr connect ADDR PORT COUNT    COUNT times: socket, connect, send 1 byte, receive 1 byte,
 *                                           close with RST (SO_LINGER 0: no TIME_WAIT, no port exhaustion);
 *                                           prints one JSON object with the latency percentiles and
 *                                           every sample in measuring order ("samples_ns")
 *   labtools-crr handshake ADDR PORT COUNT  COUNT times: socket, connect, close with RST; only connect() is
 *                                           timed (SYN out, SYN-ACK back: answered by the kernel, no server
 *                                           wakeup); the same JSON
 *
 * The client is C so that its own cost per transaction stays in the low microseconds; the
 * harness overhead is measured against the `none` datapath (straight to the pod IP).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int serve(int port)
{
	int one = 1, s = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any};
	char b;

	int u = socket(AF_INET6, SOCK_DGRAM, 0);

	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 4096) || bind(u, (struct sockaddr *)&a, sizeof(a))) {
		perror("labtools-crr serve");
		return 1;
	}
	printf("listening %d\n", port);
	fflush(stdout);
	struct timeval tv = {.tv_sec = 1};
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			continue;
		/* One client at a time: never let a lost connection block the ones behind it. */
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (read(c, &b, 1) == 1)
			(void)!write(c, &b, 1);
		close(c);
	}
}

static int client(const char *addr, int port, long count, int handshake_only)
{
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	struct timeval tv = {.tv_sec = 2};
	uint64_t *lat = calloc(count, sizeof(*lat)), t0, t1, start, sum = 0;
	long ok = 0, failed = 0;
	int one = 1;
	char b = 'x';

	if (!lat || inet_pton(AF_INET6, addr, &a.sin6_addr) != 1) {
		fprintf(stderr, "labtools-crr: bad IPv6 address %s\n", addr);
		return 2;
	}
	start = now_ns();
	for (long i = 0; i < count; i++) {
		t0 = now_ns();
		int s = socket(AF_INET6, SOCK_STREAM, 0);
		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* A lost transaction counts as failed after 2 s instead of hanging (bounds connect() too). */
		setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(s, (struct sockaddr *)&a, sizeof(a)) ||
		    (!handshake_only && (write(s, &b, 1) != 1 || read(s, &b, 1) != 1))) {
			failed++;
			if (failed > count / 10 + 10) {
				fprintf(stderr, "labtools-crr: too many failures, last: %s\n", strerror(errno));
				return 1;
			}
			close(s);
			continue;
		}
		t1 = now_ns();
		setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(s);
		lat[ok++] = t1 - t0;
		sum += t1 - t0;
	}
	double elapsed = (now_ns() - start) / 1e9;
	if (!ok) {
		fprintf(stderr, "labtools-crr: no transaction completed\n");
		return 1;
	}
	printf("{\"samples_ns\": [");	/* every sample, in measuring order, before sorting */
	for (long i = 0; i < ok; i++)
		printf("%s%llu", i ? ", " : "", (unsigned long long)lat[i]);
	printf("], ");
	qsort(lat, ok, sizeof(*lat), cmp_u64);
#define P(q) lat[(long)((q) * (ok - 1))]
	printf("\"transactions\": %ld, \"failed\": %ld, \"elapsed_s\": %.6f, \"rate_per_s\": %.1f, "
	       "\"mean_us\": %.3f, \"min_us\": %.3f, \"p50_us\": %.3f, \"p90_us\": %.3f, \"p99_us\": %.3f, "
	       "\"max_us\": %.3f}\n",
	       ok, failed, elapsed, ok / elapsed, sum / 1e3 / ok, lat[0] / 1e3, P(0.50) / 1e3, P(0.90) / 1e3,
	       P(0.99) / 1e3, lat[ok - 1] / 1e3);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "serve"))
		return serve(atoi(argv[2]));
	if (argc == 5 && !strcmp(argv[1], "connect"))
		return client(argv[2], atoi(argv[3]), atol(argv[4]), 0);
	if (argc == 5 && !strcmp(argv[1], "handshake"))
		return client(argv[2], atoi(argv[3]), atol(argv[4]), 1);
	fprintf(stderr, "usage: %s serve PORT | connect ADDR PORT COUNT | handshake ADDR PORT COUNT\n", argv[0]);
	return 2;
}
