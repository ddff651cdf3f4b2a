"""`python -m vitcli` is the `vitcli` command."""

from vitcli.cli.app import main

main()
