"""A user's ``extra`` keys in HTTP header names: ``X-Remote-Extra-<key>``, ``Impersonate-Extra-<key>``.

Extra keys are free text and the usual ones are not valid in a header name: a bound
service-account token's user carries ``authentication.kubernetes.io/credential-id``, and ``/``
is not an RFC 7230 token character, so a server's HTTP parser refuses the whole request
(aiohttp: 400 "Invalid header token"). As upstream (client-go's ``headerKeyEscape``, the
apiserver's ``unescapeExtraKey``): the sender percent-encodes every byte of the key's UTF-8
that is not a token character, and ``%`` itself; the receiver lower-cases the rest of the
header name (header names are case-insensitive) and percent-decodes it.

Shared by the API server (the aggregator sends, impersonation receives) and the metrics server
(receives from the aggregator). Pure.
"""

from __future__ import annotations

import re
import string
import urllib.parse

__all__ = ["escape_extra_key", "unescape_extra_key"]

# RFC 7230 tchar, less "%" (escaped too, so that decoding gives back exactly the key).
_TOKEN = frozenset((string.ascii_letters + string.digits + "!#$&'*+-.^_`|~").encode())
_BAD_ESCAPE = re.compile(r"%(?![0-9a-f]{2})")


def escape_extra_key(key: str) -> str:
    """``authentication.kubernetes.io/credential-id`` → ``authentication.kubernetes.io%2Fcredential-id``."""
    return "".join(chr(b) if b in _TOKEN else f"%{b:02X}" for b in key.encode())


def unescape_extra_key(encoded: str) -> str:
    """The key from the rest of a header name (any case); one that does not decode (a ``%`` not
    followed by two hex digits, bytes that are not UTF-8) is kept as it came, lower-cased."""
    lowered = encoded.lower()
    if _BAD_ESCAPE.search(lowered):
        return lowered
    try:
        return urllib.parse.unquote(lowered, errors="strict")
    except UnicodeDecodeError:
        return lowered
