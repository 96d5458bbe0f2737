"""A preference method of your own, plugged in by name: ORPO from TRL (`trl.experimental.orpo`), written as one file
(`orpo.py`) that registers it. See docs/architecture.md:

    PYTHONPATH=examples DPO_PIPELINE_METHODS=orpo_method.orpo python dpo.py --config configs/tiny/dpo.yaml \\
        --sweep method=orpo,beta=0.1 --output_dir runs/orpo
"""
