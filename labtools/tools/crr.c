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
 *   labtools-crr watch ADDR PORT up|down HZ TIMEOUT_S
 *                                           one handshake attempt every 1/HZ s (absolute schedule) until the
 *                                           outcome flips to the one wanted: "up" is a completed connect(),
 *                                           "down" an answered refusal (RST or ICMP error). An attempt without
 *                                           an answer within 20 ms is "lost" and decides nothing (a loaded
 *                                           node must not look like a removed Service). Prints "probing" once
 *                                           the first attempt showed the other outcome, then one JSON object
 *                                           with CLOCK_MONOTONIC times; exits 3 if the first attempt already
 *                                           showed the wanted one, 4 at TIMEOUT_S without a flip
 *
 * The client is C so that its own cost per transaction stays in the low microseconds; the
 * harness overhead is measured against the `none` datapath (straight to the pod IP).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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

enum outcome { UP, DOWN, LOST };

/* One handshake: SYN out, then wait for the answer. *sent is the time the SYN left (connect() called). */
static enum outcome attempt(const struct sockaddr_in6 *a, uint64_t *sent)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	struct pollfd p = {.events = POLLOUT};
	int err = 0;
	socklen_t len = sizeof(err);

	p.fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
	*sent = now_ns();
	if (connect(p.fd, (const struct sockaddr *)a, sizeof(*a)) && errno != EINPROGRESS)
		err = errno;
	else if (poll(&p, 1, 20) <= 0)
		err = ETIMEDOUT;
	else
		getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len);
	setsockopt(p.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(p.fd);
	if (!err)
		return UP;
	return err == ETIMEDOUT ? LOST : DOWN;
}

static int watch(const char *addr, int port, const char *want_s, double hz, double timeout_s)
{
	struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
	enum outcome want = strcmp(want_s, "up") ? DOWN : UP, o;
	uint64_t period = (uint64_t)(1e9 / hz), start, next, sent, last_other = 0;
	long attempts = 0, lost = 0;

	if (inet_pton(AF_INET6, addr, &a.sin6_addr) != 1 || hz < 1 || timeout_s <= 0 ||
	    (strcmp(want_s, "up") && strcmp(want_s, "down"))) {
		fprintf(stderr, "labtools-crr watch: need an IPv6 address, up or down, HZ >= 1, TIMEOUT_S > 0\n");
		return 2;
	}
	start = next = now_ns();
	for (;;) {
		o = attempt(&a, &sent);
		attempts++;
		if (o == LOST) {
			lost++;
		} else if (o != want) {
			if (!last_other) {
				printf("probing\n");
				fflush(stdout);
			}
			last_other = sent;
		} else if (!last_other) {
			fprintf(stderr, "labtools-crr watch: [%s]:%d is already %s\n", addr, port, want_s);
			return 3;
		} else {
			break;
		}
		if (sent - start > (uint64_t)(timeout_s * 1e9)) {
			printf("{\"flipped\": false, \"attempts\": %ld, \"lost\": %ld}\n", attempts, lost);
			return 4;
		}
		do	/* the next tick still ahead (a slow attempt skips ticks rather than bunching them) */
			next += period;
		while (next <= now_ns());
		struct timespec ts = {.tv_sec = next / 1000000000ull, .tv_nsec = next % 1000000000ull};
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
	}
	printf("{\"flipped\": true, \"want\": \"%s\", \"flip_ns\": %llu, \"last_other_ns\": %llu, "
	       "\"start_ns\": %llu, \"attempts\": %ld, \"lost\": %ld, \"hz\": %.1f}\n",
	       want_s, (unsigned long long)sent, (unsigned long long)last_other, (unsigned long long)start,
	       attempts, lost, hz);
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
	if (argc == 7 && !strcmp(argv[1], "watch"))
		return watch(argv[2], atoi(argv[3]), argv[4], atof(argv[5]), atof(argv[6]));
	fprintf(stderr, "usage: %s serve PORT | connect ADDR PORT COUNT | handshake ADDR PORT COUNT | "
		"watch ADDR PORT up|down HZ TIMEOUT_S\n", argv[0]);
	return 2;
}
