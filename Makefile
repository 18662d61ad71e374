# make test : create .venv if missing, install requirements and test tools, lint (ruff), run the tests
# make demo : generate a held-out synthetic set, segment it with the shipped models, write demo_output/
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo venv clean bench export screenshot

venv: $(STAMP)

# Re-installs only when a requirements file, pyproject.toml or this Makefile changes. The project itself is
# installed editable (`pip install -e .`): `import synseg` and the synseg-* commands work from any folder. torch is pinned in requirements.txt:
# on a CPU machine that pin resolves to the CPU wheel, on a CUDA box to the CUDA build.
# requirements-napari.txt: the napari plugin and its tests (pytest-qt); napari's canvas needs an X display for
# OpenGL, so the tests start Xvfb (Debian's xvfb, installed here when missing and make runs as root).
$(STAMP): requirements.txt requirements-export.txt requirements-napari.txt pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-export.txt \
		-r requirements-napari.txt pytest ruff==0.17.6
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	if ! command -v Xvfb >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb >/dev/null; fi
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) demo.py --output-dir demo_output

clean:
	rm -rf demo_output .pytest_cache

# make bench : real-data benchmarks and faint-structure proxies (needs ../shared/realdata); installs the Big-FISH peer first
bench: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check big-fish-reloaded==0.6.3 torch==2.13.0
	$(PY) bench/realdata_benchmark.py --output-dir /tmp/synseg_bench
	$(PY) bench/faint_spots.py --output-dir /tmp/synseg_faint
	$(PY) bench/isbi_tracking.py --output-dir /tmp/synseg_isbi
	$(PY) bench/faint_filaments.py --output-dir /tmp/synseg_filaments
	$(PY) bench/autofluorescence_spots.py --output-dir /tmp/synseg_autofluor

# make export : bioimage.io packages of both shipped models in exports/ (ignored; the local-contrast normalisation
# inside the TorchScript and ONNX graphs, bioimageio.core's test run), and the bare networks as ONNX files
export: $(STAMP)
	$(PY) export_model.py models/vesicle.pth -o exports/synseg-vesicle.zip --overwrite --check
	$(PY) export_model.py models/cytoskeleton.pth -o exports/synseg-cytoskeleton.zip --overwrite --check
	$(PY) export_model.py models/vesicle.pth -o exports/synseg-vesicle.onnx --format onnx --overwrite
	$(PY) export_model.py models/cytoskeleton.pth -o exports/synseg-cytoskeleton.onnx --format onnx --overwrite

# make screenshot : docs/napari_screenshot.png, the napari viewer with the plugin's results on a synthetic image
screenshot: $(STAMP)
	$(PY) scripts/make_screenshot.py --output docs/napari_screenshot.png
