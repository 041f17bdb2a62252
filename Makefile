# facerec front door. LFW=<folder> points every target at an LFW copy already on disk
# (the folder holding lfw-deepfunneled/ and pairs*.txt / people*.txt).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LFW    ?= data/lfw
ARGS   ?=

export NO_ALBUMENTATIONS_UPDATE := 1
export FACEREC_LFW_ROOT := $(abspath $(LFW))

.PHONY: install demo train test test-all lint format bench lfw clean evaluate export lfw-bin serve

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev,align,serve]"
	touch $@

install: $(VENV)/.installed  ## venv + torch/torchvision from PyPI + facerec (editable) + dev tools + align extra (the demo aligns) + serve extra (the page)

lfw:  ## make sure $(LFW) holds LFW (downloads it when the folder is missing)
	@test -f "$(LFW)/pairsDevTest.txt" || $(PY) -m facerec get-lfw --to "$(LFW)"

demo: install lfw  ## the main job: align LFW once, train ArcFace on 20,000 DevTrain images, flip-LFW accuracy
	$(PY) train.py experiment=demo $(ARGS)

train: install  ## python train.py with ARGS="head=cosface backbone=resnet50 ..."
	$(PY) train.py $(ARGS)

test: install  ## the default test suite (CPU, a few minutes)
	$(PY) -m pytest -m "not slow" $(ARGS)

test-all: install  ## every test, slow ones included
	$(PY) -m pytest $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

CKPT ?= $(lastword $(sort $(wildcard runs/*/*/checkpoints/best.pt)))

evaluate: install  ## evaluate CKPT=<checkpoint> on its verification sets (ARGS="--sets name=pairs:root")
	$(PY) -m facerec evaluate $(CKPT) $(ARGS)

export: install  ## export CKPT to ONNX and check it against PyTorch on real LFW images
	$(PY) -m facerec export-onnx $(CKPT) --out $(or $(OUT),model.onnx) --check-lfw $(LFW)

lfw-bin: install  ## write LFW's pairs.txt as an insightface-style lfw.bin pack
	$(PY) -m facerec make-bin $(LFW)/pairs.txt $(LFW)/lfw-deepfunneled --out $(or $(OUT),data/lfw.bin) --center-crop 150 --size 112

serve: install  ## the page to try CKPT=<model> (ARGS="--gallery people/ --port 8000")
	$(PY) -m facerec serve $(CKPT) $(ARGS)

bench: install  ## speed benchmarks (ratios against plain baselines in the same process)
	$(PY) -m facerec bench heads
	$(PY) -m facerec bench data --lfw $(LFW)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
