# bench.mk - the peers of `make bench` (tests/bench.sh, BENCHMARKS.md):
# issue 11's request/response server workload on ZeroMQ and nng, the same
# load as tools/reqrep-bench (tools/reqrep.h).  They need libzmq / libnng,
# so nothing else builds them: tests/bench.sh runs `make bench-peers` only
# for the libraries whose header it finds.  The default build and make
# check never depend on them.

BENCH_PEERS ?= zmq-reqrep nng-reqrep
BENCH_PEER_FLAGS = -std=c11 $(WARN) $(CFLAGS)

.PHONY: bench-peers
bench-peers: $(BENCH_PEERS:%=$(BUILD)/bench/%)

$(BUILD)/bench/zmq-reqrep: bench/zmq-reqrep.c tools/reqrep.h
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_PEER_FLAGS) -o $@ $< -lzmq -pthread

$(BUILD)/bench/nng-reqrep: bench/nng-reqrep.c tools/reqrep.h
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_PEER_FLAGS) -o $@ $< -lnng -pthread
