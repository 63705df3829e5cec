/*
 * send32 PORT: a 32-bit (i386) program for the VM scenarios. It sends UDP datagrams to 127.0.0.1
 * without connect through the 32-bit entry points, which the 64-bit syscall hooks never see:
 * sendto(2) to PORT by socketcall(2) (the old multiplexer), sendmsg(2) to PORT+1 and sendmmsg(2)
 * to PORT+2 and PORT+3 by their own i386 syscalls (whose messages the kernel takes in the 32-bit
 * layout). Prints "send32: ok" and exits 0 when all of them were sent, else says which failed and
 * exits 1.
 *
 * Freestanding (no libc, so no 32-bit libc is needed to build it): `gcc -m32 -static -nostdlib
 * -ffreestanding -fno-pic -O2`, as the Makefile's vm-tests target does.
 */
typedef unsigned int u32;
typedef unsigned short u16;

#define NR_exit 1
#define NR_write 4
#define NR_socketcall 102
#define NR_sendmmsg 345
#define NR_socket 359
#define NR_sendmsg 370
#define SYS_SENDTO 11
#define AF_INET 2
#define SOCK_DGRAM 2

static long sys3(long nr, long a, long b, long c)
{
	long ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
	return ret;
}

static long sys4(long nr, long a, long b, long c, long d)
{
	long ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d) : "memory");
	return ret;
}

struct sockaddr_in32 {
	u16 family;
	u16 port;
	u32 addr;
	unsigned char zero[8];
};

struct iovec32 {
	u32 base;
	u32 len;
};

/* compat_msghdr and compat_mmsghdr: every pointer and size is 32 bits. */
struct msghdr32 {
	u32 name;
	u32 namelen;
	u32 iov;
	u32 iovlen;
	u32 control;
	u32 controllen;
	u32 flags;
};

struct mmsghdr32 {
	struct msghdr32 hdr;
	u32 len;
};

static u16 be16(u16 v)
{
	return (u16)((v >> 8) | (v << 8));
}

static void say(const char *s)
{
	u32 n = 0;
	while (s[n])
		n++;
	sys3(NR_write, 1, (long)s, n);
}

static __attribute__((noreturn)) void quit(int code)
{
	sys3(NR_exit, code, 0, 0);
	for (;;) {
	}
}

static struct sockaddr_in32 to(u16 port)
{
	struct sockaddr_in32 a = { .family = AF_INET, .port = be16(port), .addr = 0x0100007f };
	return a;
}

__attribute__((used)) void start_c(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	if (argc != 2) {
		say("usage: send32 PORT\n");
		quit(64);
	}
	u32 port = 0;
	for (const char *p = argv[1]; *p; p++) {
		if (*p < '0' || *p > '9' || port > 65535) {
			say("send32: PORT is not a port number\n");
			quit(64);
		}
		port = port * 10 + (u32)(*p - '0');
	}
	if (port == 0 || port > 65532) {
		say("send32: PORT must leave room for PORT+3\n");
		quit(64);
	}

	long fd = sys3(NR_socket, AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) {
		say("send32: socket failed\n");
		quit(1);
	}
	char payload[4] = { 'f', 'l', 'o', 'w' };
	struct iovec32 iov = { (u32)payload, sizeof(payload) };
	int failed = 0;

	struct sockaddr_in32 a0 = to(port);
	unsigned long args[6] = { fd, (unsigned long)payload, sizeof(payload), 0, (unsigned long)&a0, sizeof(a0) };
	if (sys3(NR_socketcall, SYS_SENDTO, (long)args, 0) != sizeof(payload)) {
		say("send32: sendto (socketcall) failed\n");
		failed = 1;
	}

	struct sockaddr_in32 a1 = to(port + 1);
	struct msghdr32 m = { .name = (u32)&a1, .namelen = sizeof(a1), .iov = (u32)&iov, .iovlen = 1 };
	if (sys3(NR_sendmsg, fd, (long)&m, 0) != sizeof(payload)) {
		say("send32: sendmsg failed\n");
		failed = 1;
	}

	struct sockaddr_in32 a2 = to(port + 2), a3 = to(port + 3);
	struct mmsghdr32 mm[2] = {
		{ .hdr = { .name = (u32)&a2, .namelen = sizeof(a2), .iov = (u32)&iov, .iovlen = 1 } },
		{ .hdr = { .name = (u32)&a3, .namelen = sizeof(a3), .iov = (u32)&iov, .iovlen = 1 } },
	};
	if (sys4(NR_sendmmsg, fd, (long)mm, 2, 0) != 2) {
		say("send32: sendmmsg failed\n");
		failed = 1;
	}
	if (!failed)
		say("send32: ok\n");
	quit(failed);
}

/* The kernel starts a static i386 program with argc, argv... at the stack pointer. */
__asm__(".globl _start\n"
	"_start:\n"
	"\tmov %esp, %eax\n"
	"\tand $-16, %esp\n"
	"\tsub $12, %esp\n"
	"\tpush %eax\n"
	"\tcall start_c\n");
