"""``python -m walq``: the walq command (see walq/cli/)."""

from walq.cli import main

if __name__ == "__main__":
    main(prog_name="walq")
