"""``kubepy token create|list|delete``: bootstrap tokens through the API, as ``kubeadm token`` manages them.

A token is a Secret in ``kube-system`` (``kubepy.bootstraptoken`` has its
shape and the rules); these commands write and read those Secrets with the
admin kubeconfig (``--kubeconfig``, or ``DATA_DIR/admin.kubeconfig`` of
``--data-dir``). ``create_token`` is also how ``kubepy up`` gets the token
its kubelets join with.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from kubepy import bootstraptoken

if TYPE_CHECKING:
    from kubepy.client import Client
# The client (aiohttp) is imported where a command uses it: every daemon's `kubepy …` builds this parser.

__all__ = ["add_token_parser", "create_token", "list_tokens"]

DEFAULT_DATA_DIR = Path("/var/lib/kubepy/controlplane")


async def _create(client: Client, *, ttl: dt.timedelta, description: str) -> str:
    token = bootstraptoken.generate()
    secret = bootstraptoken.secret_for(token, now=dt.datetime.now(dt.UTC), ttl=ttl, description=description)
    await client.create("secrets", secret, namespace=bootstraptoken.NAMESPACE)
    return token


def create_token(kubeconfig: Path, *, ttl: dt.timedelta = bootstraptoken.DEFAULT_TTL, description: str = "") -> str:
    """A new bootstrap token, valid for ``ttl`` (raises the client's APIError/TransportError)."""
    async def run() -> str:
        from kubepy.client import Client

        async with Client.from_kubeconfig(str(kubeconfig), user_agent="kubepy-token") as client:
            return await _create(client, ttl=ttl, description=description)

    return asyncio.run(run())


def list_tokens(kubeconfig: Path) -> list[bootstraptoken.TokenRow]:
    async def run() -> list[dict]:
        from kubepy.client import Client

        async with Client.from_kubeconfig(str(kubeconfig), user_agent="kubepy-token") as client:
            items, _ = await client.list_all("secrets", namespace=bootstraptoken.NAMESPACE)
            return items

    now = dt.datetime.now(dt.UTC)
    rows = [bootstraptoken.describe(s, now=now) for s in asyncio.run(run())]
    return sorted((r for r in rows if r is not None), key=lambda r: r.expires)


def _delete(kubeconfig: Path, token_id: str) -> None:
    async def run() -> None:
        from kubepy.client import Client

        async with Client.from_kubeconfig(str(kubeconfig), user_agent="kubepy-token") as client:
            await client.delete("secrets", bootstraptoken.secret_name(token_id), namespace=bootstraptoken.NAMESPACE)

    asyncio.run(run())


def _kubeconfig(args: argparse.Namespace) -> Path:
    path = args.kubeconfig or args.data_dir / "admin.kubeconfig"
    if not path.exists():
        raise SystemExit(f"kubepy token: no admin kubeconfig at {path} (give --data-dir or --kubeconfig)")
    return path


def _ttl(text: str) -> dt.timedelta:
    try:
        return bootstraptoken.parse_ttl(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_token(args: argparse.Namespace) -> int:
    from kubepy.client.errors import APIStatusError, TransportError

    kubeconfig = _kubeconfig(args)
    try:
        if args.token_command == "create":
            print(create_token(kubeconfig, ttl=args.ttl, description=args.description))
        elif args.token_command == "list":
            rows = list_tokens(kubeconfig)
            header = bootstraptoken.TokenRow("TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION")
            widths = [max(len(getattr(r, f)) for r in [header, *rows]) for f in ("token", "ttl", "expires", "usages")]
            for r in [header, *rows]:
                cells = [r.token, r.ttl, r.expires, r.usages]
                print("   ".join(c.ljust(w) for c, w in zip(cells, widths)) + "   " + r.description)
        else:
            token_id = args.token.split(".", 1)[0]
            if not bootstraptoken.TOKEN_RE.match(token_id + ".0000000000000000"):
                print(f"kubepy token delete: {args.token!r} is not a token id ([a-z0-9]{{6}}) or token",
                      file=sys.stderr)
                return 2
            _delete(kubeconfig, token_id)
            print(f"bootstrap token {token_id!r} deleted")
    except APIStatusError as e:
        print(f"kubepy token {args.token_command}: {e}", file=sys.stderr)
        return 1
    except TransportError as e:
        print(f"kubepy token {args.token_command}: cannot reach the API server: {e}", file=sys.stderr)
        return 1
    return 0


def add_token_parser(sub: argparse._SubParsersAction) -> None:
    tokens = sub.add_parser("token", help="bootstrap tokens nodes join with (create, list, delete)")
    tsub = tokens.add_subparsers(dest="token_command", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                       help=f"the control plane's data dir, for its admin.kubeconfig (default {DEFAULT_DATA_DIR})")
        p.add_argument("--kubeconfig", type=Path, default=None, help="an admin kubeconfig (instead of --data-dir)")
        p.set_defaults(func=cmd_token)
        return p

    p = common(tsub.add_parser("create", help="print a new bootstrap token (like kubeadm token create)"))
    p.add_argument("--ttl", type=_ttl, default=bootstraptoken.DEFAULT_TTL,
                   help="how long the token is valid (default 24h; e.g. 2h, 30m)")
    p.add_argument("--description", default="", help="a note shown by kubepy token list")
    common(tsub.add_parser("list", help="bootstrap tokens with their expiry"))
    p = common(tsub.add_parser("delete", help="revoke a bootstrap token"))
    p.add_argument("token", help="the token or its id")
