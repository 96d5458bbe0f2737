"""The benchmark harness (`python -m bench.run`) and the one-command GPU check (`bench/gpu_check.sh`), beside the
scripts: they time the pipeline, and are not part of it."""
