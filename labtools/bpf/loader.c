// SPDX-License-Identifier: GPL-2.0
/* labtools-bpf-load: load nodeport.o with libbpf, fill its maps from stdin in one batch update per
 * map, then attach (or atomically replace) the tc ingress filters. Run inside the node's network
 * namespace. No bpffs pinning: the tc filters hold the programs, the programs hold the maps.
 *
 * usage: labtools-bpf-load OBJECT UPLINK [POD_IFACE...] < maps.bin
 * maps.bin: repeated records of  name[16] key_size:u32 value_size:u32 count:u32 keys[] values[]
 * The SRv6 SIDs of the program being replaced (srv6_sids) are carried over into the new one.
 *
 * One change, as Cilium's agent writes it (labtools.datapaths.ebpf.EbpfDatapath.change):
 *   labtools-bpf-load --update IFACE... < ops.bin
 *       apply single-entry updates and deletes, in the order given, to the maps of the programs attached
 *       to the IFACEs' ingress (the uplink's and the pods'; a map is found in the first program that uses
 *       it): one bpf() call per entry, no batch, as the agent's lbmap code does.
 *       ops.bin: repeated records of  name[16] op:u32 (1 update, 2 delete) key_size:u32 value_size:u32 key value
 *       Prints the entries written and the nanoseconds spent in the map calls alone (the agent holds its
 *       map fds open; finding them here is not part of its cost).
 *   labtools-bpf-load --agent IFACE...
 *       the same as a long-running writer, as Cilium's agent is: the map fds found once and kept; per change,
 *       a u32 count then that many records on stdin, answered by one line "written nanoseconds".
 *
 * The pods' CNI (labtools.lab.cni, `lab up --cni cilium`):
 *   labtools-bpf-load --cni OBJECT ROUTER_IP POD_IFACE...
 *       attach cni.o's to_container at each pod veth's egress (pref 1) and from_container_cni at its ingress
 *       (pref 2); ROUTER_IP is the source of the node's ICMPv6 time exceeded. `tc filter del` removes them.
 *
 * SRv6 (labtools.srv6):
 *   labtools-bpf-load --srv6-sid UPLINK add|del SID
 *       add or remove a decapsulating SID in srv6_sids of the program attached to UPLINK's ingress
 *       (exit 0 with a note on stderr when no NodePort program is attached: then nothing decapsulates)
 *   labtools-bpf-load --srv6-encap OBJECT DEV SRC SID [--decap DSID] PREFIX...
 *       attach srv6_egress to DEV's egress (pref/handle SRV6_PREF), encapsulating packets to PREFIX...
 *       with an SRH [SID] and outer source SRC; remove it with `tc filter del dev DEV egress pref 6`.
 *       --decap: also keep a srv6_sids map holding DSID, bound to that program, from which a NodePort
 *       program loaded later takes its SIDs (so the order of `srv6 up` and programming does not matter).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

static int die(const char *what, int err)
{
	fprintf(stderr, "labtools-bpf-load: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static void read_exact(void *buf, size_t n)
{
	if (n && fread(buf, 1, n, stdin) != n)
		die("short read on stdin", EIO);
}

static int fill_maps(struct bpf_object *obj)
{
	char name[17] = {0};
	uint32_t hdr[3];
	int total = 0;

	while (fread(name, 1, 16, stdin) == 16) {
		read_exact(hdr, sizeof(hdr));
		uint32_t ksz = hdr[0], vsz = hdr[1], count = hdr[2];
		struct bpf_map *map = bpf_object__find_map_by_name(obj, name);
		if (!map)
			die(name, ENOENT);
		if (bpf_map__key_size(map) != ksz || bpf_map__value_size(map) != vsz) {
			fprintf(stderr, "labtools-bpf-load: %s: sizes %u/%u, map has %u/%u\n", name, ksz, vsz,
				bpf_map__key_size(map), bpf_map__value_size(map));
			exit(1);
		}
		void *keys = malloc((size_t)ksz * count + 1), *vals = malloc((size_t)vsz * count + 1);
		if (!keys || !vals)
			die("malloc", ENOMEM);
		read_exact(keys, (size_t)ksz * count);
		read_exact(vals, (size_t)vsz * count);
		uint32_t n = count;
		LIBBPF_OPTS(bpf_map_batch_opts, opts);
		if (count && bpf_map_update_batch(bpf_map__fd(map), keys, vals, &n, &opts))
			die(name, errno);
		total += n;
		free(keys);
		free(vals);
		memset(name, 0, sizeof(name));
	}
	return total;
}

#define SRV6_PREF 6

/* An fd of the map called `name` of the program attached at (ifindex, point) with handle/pref; -1 if none. */
static int attached_map_fd(unsigned int ifindex, enum bpf_tc_attach_point point, __u32 pref, const char *name)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
	LIBBPF_OPTS(bpf_tc_opts, q, .handle = pref, .priority = pref);
	__u32 ids[64];
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);
	int prog, fd = -1;

	if (bpf_tc_query(&hook, &q) || !q.prog_id)
		return -1;
	prog = bpf_prog_get_fd_by_id(q.prog_id);
	if (prog < 0)
		return -1;
	info.nr_map_ids = 64;
	info.map_ids = (__u64)(unsigned long)ids;
	if (bpf_obj_get_info_by_fd(prog, &info, &len) == 0) {
		for (__u32 i = 0; i < info.nr_map_ids && i < 64 && fd < 0; i++) {
			struct bpf_map_info mi = {};
			__u32 mlen = sizeof(mi);
			int m = bpf_map_get_fd_by_id(ids[i]);

			if (m < 0)
				continue;
			if (bpf_obj_get_info_by_fd(m, &mi, &mlen) == 0 && strcmp(mi.name, name) == 0)
				fd = m;
			else
				close(m);
		}
	}
	close(prog);
	return fd;
}

/* Copy every entry of map `from` into map `to` (same key/value sizes); returns the count. */
static int copy_map(int from, int to, size_t ksz, size_t vsz)
{
	unsigned char key[64], next[64], val[64];
	void *prev = NULL;
	int n = 0;

	if (ksz > sizeof(key) || vsz > sizeof(val))
		return 0;
	while (bpf_map_get_next_key(from, prev, next) == 0) {
		memcpy(key, next, ksz);
		prev = key;
		if (bpf_map_lookup_elem(from, key, val) == 0 && bpf_map_update_elem(to, key, val, BPF_ANY) == 0)
			n++;
	}
	return n;
}

/* The maps of the programs at the IFACEs' ingress, found by name on first use and then kept open (as
 * Cilium's agent keeps its map fds). */
#define MAX_MAPS 32

struct map_fds {
	struct { char name[17]; int fd; } m[MAX_MAPS];
	int n;
	char **ifaces;
	int nifaces;
};

static int map_fd(struct map_fds *c, const char *name)
{
	for (int i = 0; i < c->n; i++)
		if (!strcmp(c->m[i].name, name))
			return c->m[i].fd;
	int fd = -1;
	for (int i = 0; i < c->nifaces && fd < 0; i++)
		fd = attached_map_fd(if_nametoindex(c->ifaces[i]), BPF_TC_INGRESS, 1, name);
	if (fd < 0) {
		fprintf(stderr, "labtools-bpf-load: no program at these interfaces' ingress has a map %s\n", name);
		exit(1);
	}
	if (c->n == MAX_MAPS)
		die("too many maps", E2BIG);
	memcpy(c->m[c->n].name, name, 17);
	c->m[c->n++].fd = fd;
	return fd;
}

/* Apply up to `limit` operation records from stdin (all of them, to EOF, when limit < 0); adds the entries
 * written to *n and the nanoseconds spent in the map calls alone to *spent. */
static void apply_ops(struct map_fds *c, long limit, int *n, uint64_t *spent)
{
	char name[17] = {0};
	unsigned char key[64], val[64];
	uint32_t hdr[3];

	for (long done = 0; limit < 0 || done < limit; done++) {
		if (fread(name, 1, 16, stdin) != 16) {
			if (limit < 0)
				return;
			die("short read on stdin", EIO);
		}
		read_exact(hdr, sizeof(hdr));
		if (hdr[1] > sizeof(key) || hdr[2] > sizeof(val) || (hdr[0] != 1 && hdr[0] != 2))
			die("bad operation record", EINVAL);
		read_exact(key, hdr[1]);
		read_exact(val, hdr[2]);
		int fd = map_fd(c, name);
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int err = hdr[0] == 1 ? bpf_map_update_elem(fd, key, val, BPF_ANY) : bpf_map_delete_elem(fd, key);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (err)
			die(name, errno);
		*spent += (t1.tv_sec - t0.tv_sec) * 1000000000ull + t1.tv_nsec - t0.tv_nsec;
		(*n)++;
		memset(name, 0, sizeof(name));
	}
}

static struct map_fds ifaces_of(int argc, char **argv, const char *usage)
{
	struct map_fds c = {.ifaces = argv + 2, .nifaces = argc - 2};

	if (argc < 3) {
		fprintf(stderr, "usage: %s %s\n", argv[0], usage);
		exit(2);
	}
	for (int i = 2; i < argc; i++)
		if (!if_nametoindex(argv[i]))
			die(argv[i], errno);
	return c;
}

static int update(int argc, char **argv)
{
	struct map_fds c = ifaces_of(argc, argv, "--update IFACE... < ops.bin");
	uint64_t spent = 0;
	int n = 0;

	apply_ops(&c, -1, &n, &spent);
	printf("%d %llu\n", n, (unsigned long long)spent);
	return 0;
}

/* Open every map of the programs at the IFACEs' ingress now, before any change: finding them is the agent's
 * start-up, not part of a change. */
static void open_all(struct map_fds *c)
{
	for (int i = 0; i < c->nifaces; i++) {
		LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = if_nametoindex(c->ifaces[i]), .attach_point = BPF_TC_INGRESS);
		LIBBPF_OPTS(bpf_tc_opts, q, .handle = 1, .priority = 1);
		__u32 ids[64];
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);

		if (bpf_tc_query(&hook, &q) || !q.prog_id)
			continue;
		int prog = bpf_prog_get_fd_by_id(q.prog_id);
		if (prog < 0)
			continue;
		info.nr_map_ids = 64;
		info.map_ids = (__u64)(unsigned long)ids;
		for (__u32 j = 0; bpf_obj_get_info_by_fd(prog, &info, &len) == 0 && j < info.nr_map_ids && j < 64; j++) {
			struct bpf_map_info mi = {};
			__u32 mlen = sizeof(mi);
			int m = bpf_map_get_fd_by_id(ids[j]), known = 0;

			if (m < 0)
				continue;
			if (bpf_obj_get_info_by_fd(m, &mi, &mlen) == 0)
				for (int k = 0; k < c->n && !known; k++)
					known = !strcmp(c->m[k].name, mi.name);
			if (known || c->n == MAX_MAPS || !mi.name[0]) {
				close(m);
				continue;
			}
			snprintf(c->m[c->n].name, sizeof(c->m[c->n].name), "%s", mi.name);
			c->m[c->n++].fd = m;
		}
		close(prog);
	}
}

/* A long-running writer, as Cilium's agent is: map fds found once and kept; then, per change, a u32 count
 * and that many operation records on stdin, answered by one line "written nanoseconds" on stdout. Exits 0
 * at the end of stdin. */
static int agent(int argc, char **argv)
{
	struct map_fds c = ifaces_of(argc, argv, "--agent IFACE... (changes on stdin)");
	uint32_t count;

	open_all(&c);

	while (fread(&count, sizeof(count), 1, stdin) == 1) {
		uint64_t spent = 0;
		int n = 0;

		apply_ops(&c, count, &n, &spent);
		printf("%d %llu\n", n, (unsigned long long)spent);
		fflush(stdout);
	}
	return 0;
}

static void parse_in6(const char *text, void *out)
{
	if (inet_pton(AF_INET6, text, out) != 1) {
		fprintf(stderr, "labtools-bpf-load: %s: not an IPv6 address\n", text);
		exit(2);
	}
}

static int srv6_sid(int argc, char **argv)
{
	unsigned char sid[16];
	__u32 one = 1;
	unsigned int ifindex;
	int fd, err;

	if (argc != 5 || (strcmp(argv[3], "add") && strcmp(argv[3], "del"))) {
		fprintf(stderr, "usage: %s --srv6-sid UPLINK add|del SID\n", argv[0]);
		return 2;
	}
	ifindex = if_nametoindex(argv[2]);
	if (!ifindex)
		die(argv[2], errno);
	parse_in6(argv[4], sid);
	fd = attached_map_fd(ifindex, BPF_TC_INGRESS, 1, "srv6_sids");
	if (fd < 0) {
		fprintf(stderr, "labtools-bpf-load: no eBPF NodePort program with srv6_sids on %s ingress: "
			"nothing to %s\n", argv[2], argv[3]);
		return 0;
	}
	err = strcmp(argv[3], "add") == 0 ? bpf_map_update_elem(fd, sid, &one, BPF_ANY) : bpf_map_delete_elem(fd, sid);
	if (err && !(errno == ENOENT && strcmp(argv[3], "del") == 0))
		die("srv6_sids", errno);
	close(fd);
	return 0;
}

static void attach_at(struct bpf_object *obj, const char *prog_name, const char *dev, enum bpf_tc_attach_point point,
		      __u32 pref)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, prog_name);
	unsigned int ifindex = if_nametoindex(dev);
	int err;

	if (!prog)
		die(prog_name, ENOENT);
	if (!ifindex)
		die(dev, errno);
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
	err = bpf_tc_hook_create(&hook);	/* the clsact qdisc */
	if (err && err != -EEXIST)
		die("clsact qdisc", err);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = pref, .priority = pref, .prog_fd = bpf_program__fd(prog),
		    .flags = BPF_TC_F_REPLACE);
	err = bpf_tc_attach(&hook, &opts);
	if (err)
		die(dev, err);
}

static void attach(struct bpf_object *obj, const char *prog_name, const char *dev)
{
	attach_at(obj, prog_name, dev, BPF_TC_INGRESS, 1);
}

#define CNI_INGRESS_PREF 2	/* after the eBPF datapath's from_container (pref 1), which lets packets continue */

/* The Cilium-like CNI programs (cni.o) on each pod veth: to_container at egress, from_container_cni at ingress. */
static int cni(int argc, char **argv)
{
	unsigned char router[16];
	__u32 key = 0;

	if (argc < 5) {
		fprintf(stderr, "usage: %s --cni OBJECT ROUTER_IP POD_IFACE...\n", argv[0]);
		return 2;
	}
	parse_in6(argv[3], router);
	struct bpf_object *obj = bpf_object__open_file(argv[2], NULL);
	if (!obj)
		die(argv[2], errno);
	int err = bpf_object__load(obj);
	if (err)
		die("load (verifier)", err);
	if (bpf_map_update_elem(bpf_map__fd(bpf_object__find_map_by_name(obj, "cni_config")), &key, router, BPF_ANY))
		die("cni_config", errno);
	for (int i = 4; i < argc; i++) {
		attach_at(obj, "to_container", argv[i], BPF_TC_EGRESS, 1);
		attach_at(obj, "from_container_cni", argv[i], BPF_TC_INGRESS, CNI_INGRESS_PREF);
	}
	printf("%d\n", argc - 4);
	return 0;
}

static int srv6_encap(int argc, char **argv)
{
	struct { __u32 prefixlen; unsigned char addr[16]; } key;
	struct { unsigned char sid[16], src[16]; } val;
	struct bpf_program *prog;
	struct bpf_object *obj;
	int err, fd;

	unsigned char dsid[16];
	const char *decap = NULL;
	int first = 6;
	__u32 one = 1;

	if (argc > 7 && strcmp(argv[6], "--decap") == 0) {
		decap = argv[7];
		parse_in6(decap, dsid);
		first = 8;
	}
	if (argc <= first) {
		fprintf(stderr, "usage: %s --srv6-encap OBJECT DEV SRC SID [--decap DSID] PREFIX...\n", argv[0]);
		return 2;
	}
	parse_in6(argv[4], val.src);
	parse_in6(argv[5], val.sid);
	obj = bpf_object__open_file(argv[2], NULL);
	if (!obj)
		die(argv[2], errno);
	/* Only the encapsulation program. Every map of the object is created, so whatever srv6_egress uses
	 * (its policy, the drop counters, ...) exists without this loader listing it; the verifier binds those
	 * to the program, and the maps it does not use are freed when this process exits. */
	bpf_object__for_each_program(prog, obj)
		bpf_program__set_autoload(prog, strcmp(bpf_program__name(prog), "srv6_egress") == 0);
	err = bpf_object__load(obj);
	if (err)
		die("load (verifier)", err);
	fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "srv6_policy"));
	if (decap) {
		struct bpf_map *sids = bpf_object__find_map_by_name(obj, "srv6_sids");
		int sfd = sids ? bpf_map__fd(sids) : -1;
		prog = bpf_object__find_program_by_name(obj, "srv6_egress");

		if (sfd < 0 || bpf_map_update_elem(sfd, dsid, &one, BPF_ANY) ||
		    bpf_prog_bind_map(bpf_program__fd(prog), sfd, NULL))
			die("srv6_sids", errno);
	}
	for (int i = first; i < argc; i++) {
		char buf[64];
		char *slash;

		snprintf(buf, sizeof(buf), "%s", argv[i]);
		slash = strchr(buf, '/');
		key.prefixlen = slash ? (__u32)atoi(slash + 1) : 128;
		if (slash)
			*slash = 0;
		parse_in6(buf, key.addr);
		if (key.prefixlen > 128 || bpf_map_update_elem(fd, &key, &val, BPF_ANY))
			die(argv[i], key.prefixlen > 128 ? EINVAL : errno);
	}
	attach_at(obj, "srv6_egress", argv[3], BPF_TC_EGRESS, SRV6_PREF);
	printf("%d\n", argc - first);
	return 0;
}

int main(int argc, char **argv)
{
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	if (argc > 1 && strcmp(argv[1], "--srv6-sid") == 0)
		return srv6_sid(argc, argv);
	if (argc > 1 && strcmp(argv[1], "--srv6-encap") == 0)
		return srv6_encap(argc, argv);
	if (argc > 1 && strcmp(argv[1], "--update") == 0)
		return update(argc, argv);
	if (argc > 1 && strcmp(argv[1], "--agent") == 0)
		return agent(argc, argv);
	if (argc > 1 && strcmp(argv[1], "--cni") == 0)
		return cni(argc, argv);
	if (argc < 3) {
		fprintf(stderr, "usage: %s OBJECT UPLINK [POD_IFACE...] < maps.bin\n", argv[0]);
		return 2;
	}
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj)
		die(argv[1], errno);
	struct bpf_program *egress = bpf_object__find_program_by_name(obj, "srv6_egress");
	if (egress)
		bpf_program__set_autoload(egress, false);	/* attached only by --srv6-encap */
	int err = bpf_object__load(obj);
	if (err)
		die("load (verifier)", err);
	int n = fill_maps(obj);
	/* The SIDs `srv6 up --mode ebpf` configured survive re-programming the services. */
	unsigned int uplink = if_nametoindex(argv[2]);
	struct bpf_map *sids = bpf_object__find_map_by_name(obj, "srv6_sids");
	for (int from_egress = 0; uplink && sids && from_egress < 2; from_egress++) {
		int old = from_egress ? attached_map_fd(uplink, BPF_TC_EGRESS, SRV6_PREF, "srv6_sids")
				      : attached_map_fd(uplink, BPF_TC_INGRESS, 1, "srv6_sids");
		if (old >= 0) {
			copy_map(old, bpf_map__fd(sids), bpf_map__key_size(sids), bpf_map__value_size(sids));
			close(old);
		}
	}
	/* Maps are full before anything is attached: the swap below is the only visible change. */
	attach(obj, "from_netdev", argv[2]);
	for (int i = 3; i < argc; i++)
		attach(obj, "from_container", argv[i]);
	printf("%d\n", n);
	return 0;
}
