"""Thin ``command(args) -> int`` entry points; ``lotus2 <subcommand>`` dispatches to them."""
