"""`python -m streamtools ...`: the same command line as the `streamtools` console script."""

from streamtools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
