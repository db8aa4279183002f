// SPDX-License-Identifier: GPL-2.0
/* labtools-transit: attach transit.o's four stamps on the worker, wait, then report what they measured.
 *
 * usage: labtools-transit OBJECT UPLINK POD_IFACE [--established] [--stats] [--keys]
 *
 * Run inside the worker's network namespace. It attaches
 *   in_request  at UPLINK's ingress and in_reply at POD_IFACE's ingress as tcx links (kernel 6.6+): they
 *               run before every classic tc filter, so before the datapath's own tc programs, and tc
 *               ingress runs before netfilter's PREROUTING;
 *   out_request at POD_IFACE's egress and out_reply at UPLINK's egress as classic tc filters at the last
 *               priority (PROBE_PREF): after POSTROUTING and after the datapath's tc programs there.
 * prints "attached" once all four are in place, and waits. On SIGINT or SIGTERM it detaches everything
 * and prints one JSON object: the matched transit times in ns per direction and the counters.
 * --stats turns on the kernel's BPF run-time statistics (BPF_ENABLE_STATS, for as long as this process
 * holds the descriptor) and adds each probe program's runs and nanoseconds to the JSON: the probe's own
 * cost. The statistics time every BPF program on the machine, the datapath's too, so a measuring run
 * leaves them off.
 * --keys adds each sample's packet key (request_keys, reply_keys: client port << 32 | TCP sequence number,
 * index for index with the samples), so that a capture of the same packets can be paired with them.
 * If it is killed outright, the links go with the process and the two classic filters stay until the
 * next run replaces them (same priority and handle) or the namespace goes.
 *
 * libbpf 1.1 (Debian 12) predates tcx, so the links are made with bpf_link_create and the UAPI numbers.
 *
 * Before 6.6 (Debian 12's 6.1) there is no tcx: the two entry stamps become classic tc filters at priority 1,
 * the datapath's own (handle PROBE_PREF, so they stay apart). Within one priority cls_bpf runs the newest
 * filter first and a replaced filter keeps its place, so the stamps still run before the datapath's
 * programs as long as those were attached before the probe (a sweep programs, then measures); a datapath
 * attached for the first time while the probe runs would run before them, and `tc filter del ... pref 1`
 * (the datapath's clear) removes them too. The JSON's "ingress_hook" says which was used.
 */
#include <errno.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define TCX_INGRESS 46	/* enum bpf_attach_type: BPF_TCX_INGRESS (linux 6.6) */
#define PROBE_PREF 0xfff0	/* the last classic tc priority the lab uses */
#define MAX_SAMPLES 65536

static const char *COUNTERS[] = {"in_request", "in_reply", "matched_request", "matched_reply",
				 "unmatched_request", "unmatched_reply", "dropped_samples"};
static volatile sig_atomic_t done;

static void on_signal(int sig)
{
	(void)sig;
	done = 1;
}

static int die(const char *what, int err)
{
	fprintf(stderr, "labtools-transit: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static unsigned int ifindex_of(const char *dev)
{
	unsigned int i = if_nametoindex(dev);

	if (!i)
		die(dev, errno);
	return i;
}

static int prog_fd(struct bpf_object *obj, const char *name)
{
	struct bpf_program *p = bpf_object__find_program_by_name(obj, name);

	if (!p)
		die(name, ENOENT);
	return bpf_program__fd(p);
}

static void tc_attach(int fd, unsigned int ifindex, enum bpf_tc_attach_point point, __u32 pref, const char *what)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = PROBE_PREF, .priority = pref, .prog_fd = fd,
		    .flags = BPF_TC_F_REPLACE);
	int err = bpf_tc_hook_create(&hook);

	if (err && err != -EEXIST)
		die("clsact qdisc", err);
	err = bpf_tc_attach(&hook, &opts);
	if (err)
		die(what, err);
}

static void tc_detach(unsigned int ifindex, enum bpf_tc_attach_point point, __u32 pref)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = PROBE_PREF, .priority = pref);

	bpf_tc_detach(&hook, &opts);
}

#define CLASSIC_INGRESS_PREF 1	/* without tcx: the datapath's priority (see the top of this file) */

/* An entry stamp at `ifindex`'s ingress: a tcx link (its fd), or -1 when it is a classic filter (pre-6.6). */
static int ingress_attach(int fd, unsigned int ifindex, const char *what)
{
	int link = bpf_link_create(fd, (int)ifindex, TCX_INGRESS, NULL);

	if (link >= 0)
		return link;
	if (errno != EINVAL)	/* a kernel without tcx does not know the attach type */
		die(what, errno);
	tc_attach(fd, ifindex, BPF_TC_INGRESS, CLASSIC_INGRESS_PREF, what);
	return -1;
}

static void ingress_detach(int link, unsigned int ifindex)
{
	if (link >= 0)
		close(link);
	else
		tc_detach(ifindex, BPF_TC_INGRESS, CLASSIC_INGRESS_PREF);
}

static const char *PROGRAMS[] = {"in_request", "out_request", "in_reply", "out_reply"};

static void print_stats(struct bpf_object *obj)
{
	printf(", \"programs\": {");
	for (unsigned int i = 0; i < sizeof(PROGRAMS) / sizeof(*PROGRAMS); i++) {
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);

		if (bpf_obj_get_info_by_fd(prog_fd(obj, PROGRAMS[i]), &info, &len))
			die("bpf_obj_get_info_by_fd", errno);
		printf("%s\"%s\": {\"runs\": %llu, \"run_time_ns\": %llu}", i ? ", " : "", PROGRAMS[i],
		       (unsigned long long)info.run_cnt, (unsigned long long)info.run_time_ns);
	}
	printf("}");
}

static __u64 counter(int fd, __u32 i)
{
	__u64 v = 0;

	bpf_map_lookup_elem(fd, &i, &v);
	return v;
}

static void print_samples(const char *name, int fd, __u64 n)
{
	printf("\"%s\": [", name);
	if (n > MAX_SAMPLES)
		n = MAX_SAMPLES;
	for (__u32 i = 0; i < n; i++) {
		__u64 v = 0;

		bpf_map_lookup_elem(fd, &i, &v);
		printf("%s%llu", i ? ", " : "", (unsigned long long)v);
	}
	printf("]");
}

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	unsigned int uplink, pod;
	int links[2], counters, err, stats = -1, keys = 0;
	const char *hook;
	__u32 zero = 0, all = 0;

	for (int i = 4; i < argc; i++) {
		if (!strcmp(argv[i], "--established")) {
			all = 1;
		} else if (!strcmp(argv[i], "--keys")) {
			keys = 1;
		} else if (!strcmp(argv[i], "--stats")) {
			stats = bpf_enable_stats(BPF_STATS_RUN_TIME);
			if (stats < 0)
				die("BPF_ENABLE_STATS", errno);
		} else {
			argc = 0;
		}
	}
	if (argc < 4) {
		fprintf(stderr, "usage: %s OBJECT UPLINK POD_IFACE [--established] [--stats] [--keys]\n", argv[0]);
		return 2;
	}
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	uplink = ifindex_of(argv[2]);
	pod = ifindex_of(argv[3]);
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj)
		die(argv[1], errno);
	err = bpf_object__load(obj);
	if (err)
		die("load (verifier)", err);
	if (bpf_map_update_elem(bpf_map__fd(bpf_object__find_map_by_name(obj, "config")), &zero, &all, BPF_ANY))
		die("config", errno);
	counters = bpf_map__fd(bpf_object__find_map_by_name(obj, "counters"));
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	/* Exits first, so that no packet is stamped in without a way to be stamped out. */
	tc_attach(prog_fd(obj, "out_request"), pod, BPF_TC_EGRESS, PROBE_PREF, "out_request");
	tc_attach(prog_fd(obj, "out_reply"), uplink, BPF_TC_EGRESS, PROBE_PREF, "out_reply");
	links[0] = ingress_attach(prog_fd(obj, "in_request"), uplink, "in_request");
	links[1] = ingress_attach(prog_fd(obj, "in_reply"), pod, "in_reply");
	hook = links[0] >= 0 ? "tcx" : "tc pref 1";
	printf("attached (ingress: %s)\n", hook);
	fflush(stdout);
	while (!done)
		pause();
	ingress_detach(links[0], uplink);
	ingress_detach(links[1], pod);
	tc_detach(pod, BPF_TC_EGRESS, PROBE_PREF);
	tc_detach(uplink, BPF_TC_EGRESS, PROBE_PREF);
	printf("{\"ingress_hook\": \"%s\", ", hook);
	print_samples("request_ns", bpf_map__fd(bpf_object__find_map_by_name(obj, "request_ns")), counter(counters, 2));
	printf(", ");
	print_samples("reply_ns", bpf_map__fd(bpf_object__find_map_by_name(obj, "reply_ns")), counter(counters, 3));
	if (keys) {
		printf(", ");
		print_samples("request_keys", bpf_map__fd(bpf_object__find_map_by_name(obj, "request_key")),
			      counter(counters, 2));
		printf(", ");
		print_samples("reply_keys", bpf_map__fd(bpf_object__find_map_by_name(obj, "reply_key")),
			      counter(counters, 3));
	}
	printf(", \"counters\": {");
	for (__u32 i = 0; i < sizeof(COUNTERS) / sizeof(*COUNTERS); i++)
		printf("%s\"%s\": %llu", i ? ", " : "", COUNTERS[i], (unsigned long long)counter(counters, i));
	printf("}");
	if (stats >= 0)
		print_stats(obj);
	printf(", \"established\": %s}\n", all ? "true" : "false");
	bpf_object__close(obj);
	return 0;
}
