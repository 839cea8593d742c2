# Two commands for a fresh clone:  `make run` (install + main job)  and  `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build by default; a GPU user sets TORCH_INDEX_URL (see README) to get a CUDA build instead.
TORCH ?= torch==2.13.0
TORCH_INDEX_URL ?=
SHARED ?= ../shared/data/tinystories-std
TRAIN ?= $(wildcard $(SHARED)/TinyStories-train-sample.txt $(SHARED)/TinyStoriesV2-GPT4-train-sample.txt $(SHARED)/TinyStories-train-more.txt)
VALID ?= $(wildcard $(SHARED)/TinyStories-valid-sample.txt)
DATA ?= data/tinystories

PORT ?= 7860

.PHONY: install run test data gui shipped-reports study study-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# setup.py and the C file too: an editable install compiles the C decoding step once, at install
$(VENV)/.installed: pyproject.toml setup.py src/nslm/models/_cstep.c | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install -q -e ".[test,hf]"
	touch $@

install: $(VENV)/.installed

# Data folder for training from the GUI: files given by TRAIN/VALID (or the shared sample), else the hub.
data: install
	$(BIN)/nslm data prepare $(if $(TRAIN),--train $(TRAIN) $(if $(VALID),--valid $(VALID)),--source hf) --out $(DATA) --if-exists reuse

# The main job: the web app with a shipped model ready. Without data (offline, no files) it still
# serves the shipped models; only training a new run needs the data folder. With data, the novelty index
# (the closest-story panel) is built in the background at a low priority the first time.
run: install
	-$(MAKE) --no-print-directory data
	$(BIN)/nslm gui --data $(DATA) --port $(PORT) --build-index

test: install
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist worksteal

# Each shipped model's evaluation report, read by the GUI's Evaluate tab: `nslm eval all --quick` on the
# shipped model into src/nslm/pretrained/<name>/report/. Run it after retraining the shipped models.
# Each model is evaluated on the data folder made with its own tokenizer (`nslm data match`): DATA if it
# is, else another folder under data/; with none, the target stops with a line naming the folders tried.
SHIPPED := $(patsubst src/nslm/pretrained/%/config.json,%,$(wildcard src/nslm/pretrained/*/config.json))
DATA_FOLDERS ?= $(DATA) $(filter-out $(DATA),$(patsubst %/meta.json,%,$(wildcard data/*/meta.json)))
shipped-reports: install
	-$(MAKE) --no-print-directory data
	set -e; for name in $(SHIPPED); do \
		data=$$($(BIN)/nslm data match --model src/nslm/pretrained/$$name $(DATA_FOLDERS)); \
		$(BIN)/nslm eval all --model src/nslm/pretrained/$$name --data $$data --quick \
			--out src/nslm/pretrained/$$name/report; \
	done

# The study (docs/study.md): its data folders, then each sweep of studies/ (a stopped sweep continues where
# it stopped; run `make study` in a second terminal to use a second core: it joins the same sweeps as a
# worker), each sweep's report, and docs/study/ (tables and plots). Hours on a 2-core CPU.
STUDY_SWEEPS ?= architecture positional width-depth tokenizers tokenizers-total data cleaning regularisation data-bound
EXTRA ?= ../shared/data/tinystories-extra
PREPARE = $(BIN)/nslm data prepare --valid $(VALID) --if-exists reuse --quiet
NO_CLEANING = --no-fix-encoding --no-normalize-whitespace --no-normalize-quotes --no-drop-incomplete \
	--min-words 0 --max-words 0 --no-dedup --no-near-dup --no-leakage-check
study-data: install
	$(PREPARE) --train $(TRAIN) --out data/ts-dev
	for s in 0.02 0.077 0.19 0.38 0.77; do $(PREPARE) --train $(TRAIN) --train-share $$s --out data/ts-share$$s; done
	for v in 512 2048 8192; do $(PREPARE) --train $(TRAIN) --vocab-size $$v --out data/ts-bpe$$v; done
	$(PREPARE) --train $(TRAIN) --tokenizer word --out data/ts-word4096
	$(PREPARE) --train $(TRAIN) --tokenizer char --out data/ts-char
	$(PREPARE) --train $(TRAIN) $(EXTRA)/train-toyrnn.txt $(EXTRA)/trainv2-decodinggpt.txt $(NO_CLEANING) --out data/ts-union-raw
	$(PREPARE) --train $(TRAIN) --vocab-limit 2000 --out data/ts-vocab2000

study: study-data
	set -e; for s in $(STUDY_SWEEPS); do \
		$(BIN)/nslm sweep run studies/$$s.toml --out sweeps/$$s; \
		$(BIN)/nslm sweep report sweeps/$$s; \
	done
	$(BIN)/nslm eval all --model $$(ls -d sweeps/architecture/trials/preset-transformer-1m-*/seed-1) \
		--model llama2c:../shared/data/anchors/llama2c-stories260K/stories260K.bin \
		--model tinystories-transformer-1m --model tinystories-gru-1m --data data/ts-dev --quick \
		--val-max-tokens 1000000 --raw-valid $(VALID) --prompt-limit 44 \
		--skip cola --skip hellaswag --skip judge --out docs/study/q7
	mkdir -p docs/study/sweeps
	for s in $(STUDY_SWEEPS); do rm -rf docs/study/sweeps/$$s && cp -r sweeps/$$s/report docs/study/sweeps/$$s; done
	$(BIN)/python studies/build.py --sweeps docs/study/sweeps --out docs/study
