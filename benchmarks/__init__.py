"""dapi-config's benchmarks (SPEC §12): ``python -m benchmarks --quick|--full``.

Every comparison is a ratio of two variants measured side by side: all variants run
round-robin in one process, in a shuffled order each round, so machine noise hits them alike.
Results go to ``benchmarks/results/<mode>.{md,json}`` with a plot of cost against registry size.
"""
