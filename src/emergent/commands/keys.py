"""Command `keys`: manage the service's API keys (hashes and scopes in serve.keys_file).

  python -m emergent keys add --scope predict [--scope feedback] [--scope admin] [--name NAME]
  python -m emergent keys list
  python -m emergent keys revoke KEY_ID

Scopes: `predict`, `feedback` (labelled examples in), `admin` (reload; implies `feedback`).
`add` prints the new key once, alone on the last line of stdout; only its hash is stored.
"""

from __future__ import annotations

import argparse

from omegaconf import DictConfig

from emergent.config import Paths, project_root
from emergent.errors import StageError
from emergent.schema import Settings
from emergent.serving.keys import SCOPES


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m emergent keys", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="create a key (printed once)")
    add.add_argument("--scope", action="append", required=True, choices=SCOPES)
    add.add_argument("--name", default="", help="a label to recognise the key by")
    sub.add_parser("list", help="key ids, scopes and creation times (never the keys)")
    revoke = sub.add_parser("revoke", help="delete a key")
    revoke.add_argument("key_id")
    try:
        return parser.parse_args(argv)
    except SystemExit as err:
        raise StageError(
            f"usage: keys add --scope {'|'.join(SCOPES)} | keys list | keys revoke ID"
        ) from err


def run(
    cfg: DictConfig, paths: Paths, argv: list[str] | None = None, *, settings: Settings
) -> None:
    from emergent.io import under
    from emergent.serving.keys import KeyFileError, KeyStore

    args = parse(list(argv or []))
    root = paths.input_dir if paths.input_dir else project_root()
    try:
        store = KeyStore.load(under(root, settings.serve.keys_file))
        if args.action == "add":
            record, key = store.add(args.scope, args.name)
            print(f"key id {record.id}, scopes {','.join(record.scopes)}, stored in {store.path}")
            print("the key is shown once; store it now:")
            print(key)
        elif args.action == "list":
            for r in store.records:
                print(f"{r.id}\t{','.join(r.scopes)}\t{r.created}\t{r.name}")
        else:
            record = store.revoke(args.key_id)
            print(f"revoked {record.id}")
    except KeyFileError as err:
        raise StageError(str(err)) from err
