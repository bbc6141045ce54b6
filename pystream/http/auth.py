"""Who may use the HTTP server: a bearer token when it is bound off loopback.

- Bound to a loopback address (127.0.0.1, ::1, localhost: the default) it needs no token;
  bound to anything else it refuses to start without one (``check_exposure``).
- With a token, every route but ``/healthz`` and the login form needs it: an
  ``Authorization: Bearer TOKEN`` header (scripts, Prometheus' ``authorization`` setting), or
  the cookie the login form sets (the page). Missing or wrong: 401; a browser asking for a
  page gets the login form with that 401.
- The token comes from, in order: ``http.token``, ``http.token_file``, ``$PYSTREAM_HTTP_TOKEN``,
  ``$PYSTREAM_HTTP_TOKEN_FILE``, systemd's credential ``http-token``
  (``LoadCredential=http-token:/etc/pystream/http-token``, read from
  ``$CREDENTIALS_DIRECTORY/http-token``).
- The cookie holds an HMAC of the token, not the token; it is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import os
from pathlib import Path

COOKIE = "pystream_session"
MIN_TOKEN_CHARS = 16
PUBLIC_PATHS = frozenset({"/healthz", "/login"})


class TokenError(ValueError):
    """No usable token where one is needed (a configuration problem: exit status 2)."""


def is_loopback(host: str) -> bool:
    host = (host or "").strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _read_token_file(path: str, what: str) -> str:
    try:
        token = Path(path).expanduser().read_text().strip()
    except OSError as e:
        raise TokenError(f"cannot read the HTTP token from {what} {path!r}: {e}") from None
    if not token:
        raise TokenError(f"the HTTP token file {path!r} ({what}) is empty")
    return token


def resolve_token(http_cfg=None, environ=None) -> str | None:
    """The configured token (see the module doc for where it comes from), or None."""
    environ = os.environ if environ is None else environ
    token = None
    if http_cfg is not None and getattr(http_cfg, "token", None):
        token = http_cfg.token
    elif http_cfg is not None and getattr(http_cfg, "token_file", None):
        token = _read_token_file(http_cfg.token_file, "http.token_file")
    elif environ.get("PYSTREAM_HTTP_TOKEN"):
        token = environ["PYSTREAM_HTTP_TOKEN"].strip()
    elif environ.get("PYSTREAM_HTTP_TOKEN_FILE"):
        token = _read_token_file(environ["PYSTREAM_HTTP_TOKEN_FILE"], "$PYSTREAM_HTTP_TOKEN_FILE")
    elif environ.get("CREDENTIALS_DIRECTORY") and \
            (Path(environ["CREDENTIALS_DIRECTORY"]) / "http-token").is_file():
        token = _read_token_file(str(Path(environ["CREDENTIALS_DIRECTORY"]) / "http-token"),
                                 "systemd credential")
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise TokenError(f"the HTTP token is too short ({len(token)} characters; use at least "
                         f"{MIN_TOKEN_CHARS}, e.g. `openssl rand -hex 24`)")
    return token


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve off loopback without a token."""
    if token is None and not is_loopback(host):
        raise TokenError(
            f"http.host is {host!r}, which is not a loopback address: refusing to serve without "
            "a token. Set http.token (or $PYSTREAM_HTTP_TOKEN, or a token file), or bind "
            "127.0.0.1")


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"pystream-session-v1", hashlib.sha256).hexdigest()


def authorized(headers, cookies, token: str) -> bool:
    auth = headers.get("authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value and \
            hmac.compare_digest(value.strip().encode(), token.encode()):
        return True
    cookie = cookies.get(COOKIE)
    return bool(cookie) and hmac.compare_digest(cookie.encode(), session_value(token).encode())


def safe_next(value: str | None) -> str:
    """A same-site path to go back to after logging in (never another host)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value \
            or any(ord(c) < 32 for c in value):
        return "/"
    return value[:2000]


def login_page(next_path: str = "/", message: str | None = None) -> str:
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>pystream: sign in</title>
<style>
body{{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#0f141a;color:#e6edf3;
display:flex;min-height:100vh;align-items:center;justify-content:center}}
form{{background:#161d26;border:1px solid #2a3441;border-radius:10px;padding:28px 30px;width:340px;box-shadow:0 10px 30px #0006}}
h1{{font-size:20px;margin:0 0 4px}} p{{color:#9aa7b4;margin:0 0 18px;font-size:13px}}
label{{display:block;font-size:12px;color:#9aa7b4;margin-bottom:6px;text-transform:uppercase;letter-spacing:.05em}}
input{{box-sizing:border-box;width:100%;padding:10px 12px;border-radius:6px;border:1px solid #2a3441;background:#0f141a;color:#e6edf3;font-size:15px}}
input:focus{{outline:2px solid #3b82f6;border-color:transparent}}
button{{margin-top:16px;width:100%;padding:10px;border:0;border-radius:6px;background:#3b82f6;color:#fff;font-size:15px;font-weight:600;cursor:pointer}}
.error{{color:#fca5a5;background:#7f1d1d55;border:1px solid #7f1d1d;border-radius:6px;padding:8px 10px}}
.logo{{font-weight:700;letter-spacing:.02em}} .logo span{{color:#3b82f6}}
</style></head><body>
<form method="post" action="/login" id="login">
<h1 class="logo">py<span>stream</span></h1>
<p>This server needs its access token.</p>
{note}
<label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<input type="hidden" name="next" value="{html.escape(safe_next(next_path))}">
<button type="submit">Sign in</button>
</form></body></html>"""
