"""The old spelling of `python -m ds_core balance precompute`: `python -m ds_core.balance precompute`."""

import sys


def main(argv=None) -> int:
    from ds_core.cli import main as cli_main

    return cli_main(["balance", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
