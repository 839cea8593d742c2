"""`nslm eval ...` (filled in below)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate trained models")
    parser.set_defaults(func=lambda args: parser.print_help())
