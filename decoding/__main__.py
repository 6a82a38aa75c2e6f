"""`python -m decoding run <method> ...`: the headless runner (decoding/cli.py). Benchmarks: `python -m decoding.bench`."""

from decoding.cli import main

raise SystemExit(main())
