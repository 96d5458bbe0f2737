"""Loaded by a script run with this folder on PYTHONPATH (tests/test_hub_configs.py): at exit it prints how many
graphs torch.compile compiled and how many times it compiled a function again, one line on stderr:

    compilations: <unique graphs> graphs, <recompilations> recompilations

so that a test can bound the compile work of a config that sets torch_compile."""

import atexit
import sys


def _report():
    if "torch._dynamo" not in sys.modules:  # nothing was compiled
        print("compilations: 0 graphs, 0 recompilations", file=sys.stderr, flush=True)
        return
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    recompilations = sum(counters["recompiles"].values()) if "recompiles" in counters else 0
    print(f"compilations: {graphs} graphs, {recompilations} recompilations", file=sys.stderr, flush=True)


atexit.register(_report)
