/* Loads a BPF object of empty programs on the daemon's hooks, attaches every program, prints
 * "attached" and holds them until SIGTERM or SIGINT. `make bench` uses it for the floor phases: the
 * slowdown that the hooks alone cause, with no program doing any work; on this host with
 * tests/bench/floor.bpf.c (syscall tracepoints), and in scenario 42's VM, as `bench-floor`, with
 * tests/bench/floor-fexit.bpf.c (fexit). */
#include <bpf/libbpf.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: floor OBJECT\n");
		return 2;
	}
	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj || bpf_object__load(obj)) {
		fprintf(stderr, "floor: cannot load %s\n", argv[1]);
		return 1;
	}
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, obj) {
		if (!bpf_program__attach(prog)) {
			fprintf(stderr, "floor: cannot attach %s\n", bpf_program__name(prog));
			return 1;
		}
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	printf("attached\n");
	fflush(stdout);
	while (!stop)
		pause();
	bpf_object__close(obj); /* detaches: the links go with the object */
	return 0;
}
