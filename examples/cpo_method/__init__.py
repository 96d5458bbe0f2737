"""A preference method of your own, plugged in by name: CPO from TRL (`trl.experimental.cpo`), written as one file
(`cpo.py`) that registers it. See docs/architecture.md:

    PYTHONPATH=examples DPO_PIPELINE_METHODS=cpo_method.cpo python dpo.py --config configs/tiny/dpo.yaml \\
        --sweep method=cpo,beta=0.1 --output_dir runs/cpo
"""
