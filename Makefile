.PHONY: run test lint bench

# Set everything up and run the system (web + Celery worker + beat) until Ctrl-C.
run:
	bash scripts/run.sh

# Run the whole test suite against real PostgreSQL, Redis and a real Celery worker.
test:
	bash scripts/test.sh $(ARGS)

lint:
	bash scripts/bootstrap.sh requirements-dev.txt && .venv/bin/ruff check .

bench:
	bash scripts/bootstrap.sh requirements-dev.txt && for b in bench/*.py; do .venv/bin/python $$b; done
