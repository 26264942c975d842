# Long-running reliability checks (docs/reliability.md). `./run test` runs short versions.
PYTHON ?= .venv/bin/python
FUZZ_SECONDS ?= 600
FUZZ_MEMORY_KB ?= 6291456

.PHONY: fuzz soak

# Hypothesis fuzzing of the media decoders and pipelines for FUZZ_SECONDS in total;
# counts per target go to test-artifacts/fuzz-report.jsonl. The address space is capped, so
# an input that makes a decoder allocate wildly fails the run (MemoryError, input saved)
# instead of waking the kernel's OOM killer.
fuzz:
	mkdir -p test-artifacts
	ulimit -v $(FUZZ_MEMORY_KB) && \
	MOODGATE_FUZZ_SECONDS=$(FUZZ_SECONDS) MOODGATE_FUZZ_REPORT=test-artifacts/fuzz-report.jsonl \
		$(PYTHON) -m pytest -q -s tests/test_fuzz_media.py

# The full soak: 20,000 requests, 32 clients, loopback only; results to test-artifacts/.
soak:
	mkdir -p test-artifacts
	MOODGATE_SLOW=1 \
		MOODGATE_SOAK_REPORT=test-artifacts/soak-report.jsonl \
		$(PYTHON) -m pytest -q -s tests/test_soak.py -k full
