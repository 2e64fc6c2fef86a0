# The targets the README names. Slow-to-build things live in ~/.cache/leadflow.
# The recipes source scripts/common.sh, which is bash.
SHELL := /bin/bash
.PHONY: demo down status test tools build lint fmt bench bench-scale bench-e2e bench-failover

demo:            ## Run the local stack: broker + registry + topics + generated traffic
	scripts/stack.sh up

down:            ## Stop the local stack
	scripts/stack.sh down

status:          ## Show what the local stack runs, and where
	scripts/stack.sh status

test:            ## Install test prerequisites if missing, then run the whole test suite
	scripts/test.sh

tools:           ## Install Kafka, Apicurio, native build packages and the Python client
	scripts/install-tools.sh

# The benches build with the profile of `make build` (release), so that they reuse its RocksDB
# instead of compiling its C++ again (~15-25 min). Lint (clippy) does not share the build
# scripts of `make test` either (with or without `--profile test`) and compiles RocksDB once
# more on a cold cache (~20 min); so does a plain `cargo build` (other features unified).
bench:           ## Criterion benches of the hot path and the in-process pipeline
	. scripts/common.sh && cargo bench --locked --profile release --bench pipeline

bench-scale:     ## In-process pipeline at 10^5 and at CONTACTS (10^7 by default) contacts of state
	. scripts/common.sh && LEADFLOW_BENCH_CONTACTS=$${CONTACTS:-10000000} cargo bench --locked --profile release --bench pipeline

bench-e2e:       ## End-to-end bench through a local Kafka (EVENTS=200000 by default)
	. scripts/common.sh && scripts/install-tools.sh --no-python --no-apicurio && cargo bench --locked --profile release --bench e2e -- --events $${EVENTS:-200000}

bench-failover:  ## Restore rate and failover time through a local Kafka (EVENTS=100000 by default)
	. scripts/common.sh && scripts/install-tools.sh --no-python --no-apicurio && cargo bench --locked --profile release --bench failover -- --events $${EVENTS:-100000}

build:
	. scripts/common.sh && cargo build --release --locked

lint:            ## Formatting and clippy, as required before every commit
	. scripts/common.sh && cargo fmt --all -- --check && cargo clippy --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all
