// SPDX-License-Identifier: MIT OR GPL-2.0
//
// The kernel's packet drops in the run's network namespaces.
//
// Attached to the BTF tracepoint `skb:kfree_skb` (arguments: the skb, the
// freeing code's address, `enum skb_drop_reason`, the receiving socket),
// it keeps drops of IPv4 and IPv6 packets whose network namespace (the
// skb's device's, or without a device its socket's) is in `netns`, and not those of a
// packet socket's own copy (the capture's), and sends each one to `events`:
// time, namespace inode, interface index, reason, protocol and the first
// HEAD_LEN bytes from the network header; and, when the skb holds a
// conntrack entry of its own connection (not a related one), the tuple of
// the packet's direction as conntrack first saw it: the header the packet
// had before any NAT of this host rewrote it.
//
// Built by sim/build.rs with `clang -target bpf -g` and no header: the
// kernel structures below name only the fields read, and carry
// `preserve_access_index`, so the loader relocates every offset against
// the running kernel's BTF (CO-RE). It knows no scenario, trace or host
// name: only namespace inodes.
//
// The license string is GPL-compatible because the kernel lends its
// tracing helpers (bpf_probe_read_kernel) only to such programs.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define CORE __attribute__((preserve_access_index))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

// Helper ids of include/uapi/linux/bpf.h.
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_RINGBUF 27
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define AF_PACKET 17
#define HEAD_LEN 128

struct ns_common {
	unsigned int inum;
} CORE;

struct net {
	struct ns_common ns;
} CORE;

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	possible_net_t nd_net;
	int ifindex;
} CORE;

struct sock_common {
	unsigned short skc_family;
	possible_net_t skc_net;
} CORE;

struct sock {
	struct sock_common __sk_common;
} CORE;

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned long _nfct;
	unsigned char *head;
	unsigned char *data;
	__u16 network_header;
	__u16 protocol;
} CORE;

// Conntrack's tuple (include/net/netfilter/nf_conntrack_tuple.h): only the
// fields read.
union nf_inet_addr {
	__u32 all[4];
} CORE;

union nf_conntrack_man_proto {
	__u16 all;
} CORE;

struct nf_conntrack_man {
	union nf_inet_addr u3;
	union nf_conntrack_man_proto u;
	__u16 l3num;
} CORE;

struct nf_conntrack_tuple {
	struct nf_conntrack_man src;
	struct {
		union nf_inet_addr u3;
		union {
			__u16 all;
		} u;
		__u8 protonum;
	} dst;
} CORE;

struct nf_conntrack_tuple_hash {
	struct nf_conntrack_tuple tuple;
} CORE;

struct nf_conn {
	struct nf_conntrack_tuple_hash tuplehash[2];
} CORE;

// enum ip_conntrack_info: the skb's relation to its entry (`_nfct & 7`).
#define IP_CT_ESTABLISHED 0
#define IP_CT_NEW 2
#define IP_CT_ESTABLISHED_REPLY 3
#define NFCT_INFOMASK 7UL

// One drop, as the loader reads it (sim/src/capture/kernel_drops.rs).
struct event {
	__u64 time_ns;
	__u32 netns;
	__u32 ifindex;
	__u32 reason;
	__u16 protocol;
	__u16 len;
	__u8 head[HEAD_LEN];
	// Conntrack's tuple of the packet's direction; ct_info 0: none (no
	// entry, or one the packet is only related to), else ctinfo + 1.
	__u8 ct_info;
	__u8 ct_proto;
	__u16 ct_l3num;
	__u16 ct_sport;
	__u16 ct_dport;
	__u32 ct_src[4];
	__u32 ct_dst[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

// Drops that found `events` full: counted, so none is lost uncounted.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

// The tuple of the packet's own direction of its conntrack entry: the
// original direction for a packet that opened or continues it, the reply
// direction for a reply. A packet only related to an entry (an ICMP error)
// has none of its own; nor has an untracked one.
static void ct_tuple(struct sk_buff *skb, struct event *e)
{
	unsigned long nfct = skb->_nfct;
	__u32 info = nfct & NFCT_INFOMASK;
	struct nf_conn *ct = (struct nf_conn *)(nfct & ~NFCT_INFOMASK);
	struct nf_conntrack_tuple *t;

	e->ct_info = 0;
	if (!ct)
		return;
	if (info == IP_CT_ESTABLISHED || info == IP_CT_NEW)
		t = &ct->tuplehash[0].tuple;
	else if (info == IP_CT_ESTABLISHED_REPLY)
		t = &ct->tuplehash[1].tuple;
	else
		return;
	if (bpf_probe_read_kernel(&e->ct_src, sizeof(e->ct_src), &t->src.u3.all) < 0 ||
	    bpf_probe_read_kernel(&e->ct_dst, sizeof(e->ct_dst), &t->dst.u3.all) < 0 ||
	    bpf_probe_read_kernel(&e->ct_sport, sizeof(e->ct_sport), &t->src.u.all) < 0 ||
	    bpf_probe_read_kernel(&e->ct_dport, sizeof(e->ct_dport), &t->dst.u.all) < 0 ||
	    bpf_probe_read_kernel(&e->ct_l3num, sizeof(e->ct_l3num), &t->src.l3num) < 0 ||
	    bpf_probe_read_kernel(&e->ct_proto, sizeof(e->ct_proto), &t->dst.protonum) < 0)
		return;
	e->ct_info = info + 1;
}

static __u32 inum_of(struct net *net)
{
	if (!net)
		return 0;
	return net->ns.inum;
}

SEC("tp_btf/kfree_skb")
int kfree_skb(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	__u32 reason = (__u32)ctx[2];
	struct sock *rx_sk = (struct sock *)ctx[3];
	struct net_device *dev;
	struct sock *sk;
	struct event *e;
	__u32 ns = 0, ifindex = 0;
	__u16 proto, nh;
	unsigned char *from;

	if (!skb)
		return 0;
	proto = skb->protocol;
	if (proto != __builtin_bswap16(ETH_P_IP) && proto != __builtin_bswap16(ETH_P_IPV6))
		return 0;
	if (rx_sk && rx_sk->__sk_common.skc_family == AF_PACKET)
		return 0;
	// A packet on a device belongs to the device's namespace (a socket
	// there may be another namespace's, as a packet socket of the run's
	// own impairments is); only one without a device to its socket's.
	dev = skb->dev;
	if (dev) {
		ns = inum_of(dev->nd_net.net);
		ifindex = dev->ifindex;
	} else {
		sk = skb->sk;
		if (!sk)
			return 0;
		ns = inum_of(sk->__sk_common.skc_net.net);
	}
	if (!ns || !bpf_map_lookup_elem(&netns, &ns))
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&lost, &zero);
		if (n)
			__sync_fetch_and_add(n, 1);
		return 0;
	}
	e->time_ns = bpf_ktime_get_ns();
	e->netns = ns;
	e->ifindex = ifindex;
	e->reason = reason;
	e->protocol = __builtin_bswap16(proto);
	nh = skb->network_header;
	from = nh == 0xffff ? skb->data : skb->head + nh;
	e->len = HEAD_LEN;
	if (bpf_probe_read_kernel(e->head, HEAD_LEN, from) < 0)
		e->len = 0;
	ct_tuple(skb, e);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
