# The two commands of the README, and a few helpers. Everything is in scripts/.
.PHONY: run test check bench sqlx-prepare sqlx-check db db-stop

## Run Herd locally (starts PostgreSQL when DATABASE_URL is not set).
run:
	scripts/run.sh

## Run every test (starts the PostgreSQL the tests need).
test:
	scripts/test.sh

## The benchmarks of docs/BENCHMARKS.md (release builds), on a PostgreSQL cluster with
## durable settings (./var/postgres-bench, port 54330, started here) unless DATABASE_URL names
## a server; each benchmark prints the machine and the server's settings with its figures.
BENCH_DB = $$(HERD_PG_DIR=$(CURDIR)/var/postgres-bench HERD_PG_PORT=54330 HERD_PG_DURABLE=1 scripts/pg.sh start | sed 's|/herd$$|/postgres|')
bench:
	DATABASE_URL=$(BENCH_DB) cargo bench -p herd-web --bench webhook_ingest
	DATABASE_URL=$(BENCH_DB) cargo bench -p herd-web --bench dashboard
	DATABASE_URL=$(BENCH_DB) cargo bench -p herd-web --bench support_queue
	DATABASE_URL=$(BENCH_DB) cargo bench -p herd-billing --bench event_storm
	DATABASE_URL=$(BENCH_DB) cargo bench -p herd-orchestrator --bench order_to_apply
	DATABASE_URL=$(BENCH_DB) cargo bench -p herd-jobs --bench claims
	cargo bench -p herd-k8s --bench render_diff
	DATABASE_URL=$(BENCH_DB) cargo bench -p herd-k8s --bench dump_restore

## Formatting, lints, offline query data and layering checks, as CI runs them.
check:
	scripts/check.sh

## Regenerate .sqlx/ after changing a query or a migration.
sqlx-prepare:
	scripts/sqlx.sh prepare

## Fail when .sqlx/ is stale.
sqlx-check:
	scripts/sqlx.sh check

db:
	scripts/pg.sh start

db-stop:
	scripts/pg.sh stop
