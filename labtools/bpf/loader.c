// SPDX-License-Identifier: GPL-2.0
/* labtools-bpf-load: load nodeport.o with libbpf, fill its maps from stdin in one batch update per
 * map, then attach (or atomically replace) the tc ingress filters. Run inside the node's network
 * namespace. No bpffs pinning: the tc filters hold the programs, the programs hold the maps.
 *
 * usage: labtools-bpf-load OBJECT UPLINK [POD_IFACE...] < maps.bin
 * maps.bin: repeated records of  name[16] key_size:u32 value_size:u32 count:u32 keys[] values[]
 */
#include <errno.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void attach(struct bpf_object *obj, const char *prog_name, const char *dev)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, prog_name);
	unsigned int ifindex = if_nametoindex(dev);
	int err;

	if (!prog)
		die(prog_name, ENOENT);
	if (!ifindex)
		die(dev, errno);
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
	err = bpf_tc_hook_create(&hook);	/* the clsact qdisc */
	if (err && err != -EEXIST)
		die("clsact qdisc", err);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = 1, .priority = 1, .prog_fd = bpf_program__fd(prog),
		    .flags = BPF_TC_F_REPLACE);
	err = bpf_tc_attach(&hook, &opts);
	if (err)
		die(dev, err);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s OBJECT UPLINK [POD_IFACE...] < maps.bin\n", argv[0]);
		return 2;
	}
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj)
		die(argv[1], errno);
	int err = bpf_object__load(obj);
	if (err)
		die("load (verifier)", err);
	int n = fill_maps(obj);
	/* Maps are full before anything is attached: the swap below is the only visible change. */
	attach(obj, "from_netdev", argv[2]);
	for (int i = 3; i < argc; i++)
		attach(obj, "from_container", argv[i]);
	printf("%d\n", n);
	return 0;
}
