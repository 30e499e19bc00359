"""`tw-mesh user`: the node's local keyring of users and their API tokens.

Apart from the file commands (cli_storage.py) because it talks to no node: it reads and writes
the data dir directly (DATA_DIR/users/NAME.key and NAME.token, 0600), as the node's uid; a
running node sees a new or rotated token on its next call.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from taskworker.cli_common import add_json_flag, print_json


def cmd_user(args: argparse.Namespace) -> int:
    from storage.keyring import Keyring
    from taskworker.api_token import (
        load_or_create_user_token,
        rotate_user_token,
        user_token_file,
    )

    ring = Keyring(args.data_dir)
    if args.user_command == "create":
        key = ring.create(args.name)
        load_or_create_user_token(args.data_dir, args.name)
        path = user_token_file(args.data_dir, args.name)
        if args.json:
            print_json({"name": args.name, "public_key": bytes(key.verify_key).hex(),
                        "token_file": str(path)})
        else:
            print(f"{args.name} {bytes(key.verify_key).hex()}")
            print(f"tw-mesh: {args.name}'s API token is in {path} (0600); it acts only as "
                  f"{args.name}. Hand it over with `tw-mesh user token {args.name}`",
                  file=sys.stderr)
        return 0
    if args.user_command == "token":
        ring.get(args.name)                     # NotFoundError (one line) if no such user
        rotate = args.rotate
        token = (rotate_user_token if rotate else load_or_create_user_token)(args.data_dir,
                                                                             args.name)
        path = user_token_file(args.data_dir, args.name)
        if args.json:
            print_json({"name": args.name, "token": token, "token_file": str(path),
                        "rotated": rotate})
        else:
            print(token)
            if rotate:
                print(f"tw-mesh: {args.name}'s old API token no longer works (new one in "
                      f"{path})", file=sys.stderr)
        return 0
    users = [{"name": n, "public_key": ring.public_key(n).hex(),
              "token": user_token_file(args.data_dir, n).exists()} for n in ring.names()]
    if args.json:
        print_json(users)
    else:
        for u in users:
            print(f"{u['name']:<24} {u['public_key']}{'' if u['token'] else '  (no token)'}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the user subcommand (create, token, list)."""
    p = sub.add_parser("user", help="manage the node's local keyring of users and their tokens",
                       description="Users are Ed25519 keys in DATA_DIR/users/NAME.key (0600); "
                       "user_id in the API is the name. Each user also gets an API token, "
                       "DATA_DIR/users/NAME.token (0600): a call made with it acts only as that "
                       "user (an empty user_id means them; naming another user is refused) and "
                       "may use the file commands (put, get, stat, share, revise, log, grant, "
                       "sync) and status/peers, not leave, deploy or secrets. The node's own "
                       "token (DATA_DIR/api.token) stays the admin's: it acts as any user. "
                       "These commands read and write the data dir directly (run them as the "
                       "node's uid); a running node sees a new or rotated token on the next call.",
                       epilog="examples:\n"
                       "  tw-mesh user create alice --data-dir ./node1      # key and token\n"
                       "  tw-mesh user token alice --data-dir ./node1       # print alice's token\n"
                       "  tw-mesh user token alice --rotate --data-dir ./node1  # the old one stops\n"
                       "  tw-mesh user list --data-dir ./node1\n"
                       "alice then uses her token (and no --user):\n"
                       "  TW_MESH_API_TOKEN=$(cat alice.token) tw-mesh put notes.txt\n"
                       "  tw-mesh get CID --api-token-file alice.token -o notes.txt",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    users = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    actions = {"create": "create a user: key and API token",
               "token": "print a user's API token (made if missing); --rotate replaces it",
               "list": "list users (name, public key; '(no token)' if none yet)"}
    for action, text in actions.items():
        q = users.add_parser(action, help=text, description=text[:1].upper() + text[1:] + ".")
        if action in ("create", "token"):
            q.add_argument("name")
        if action == "token":
            q.add_argument("--rotate", action="store_true",
                           help="make a new token; the old one stops working at once")
        q.add_argument("--data-dir", type=Path, default=Path(".tw-mesh"),
                       help="the node's data dir (default ./.tw-mesh)")
        add_json_flag(q)
        q.set_defaults(func=cmd_user)
