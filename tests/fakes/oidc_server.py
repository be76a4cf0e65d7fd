"""An OpenID Connect provider double, at the wire: discovery, authorize, token, JWKS and
userinfo, as Streamlit's ``st.login`` (Authlib) talks to Google, Okta or Keycloak.

    with OIDCFake(email="ada@example.com", name="Ada") as idp:
        idp.metadata_url        # for [auth] server_metadata_url
        idp.client_id, idp.client_secret
        idp.requests            # what it was asked, in order

``/authorize`` consents at once (no login page): it redirects back to the registered
``redirect_uri`` with a one-time code, as a provider does for a signed-in user. ``/token``
checks the client's credentials, the code, its redirect URI and (when the client sent
one) the PKCE verifier, and answers an RS256 ID token carrying the ``nonce`` of the
authorization request; ``/jwks`` publishes the key, ``/userinfo`` the claims for the
access token. A wrong client secret, code or redirect is an OAuth error (HTTP 400/401)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey

__all__ = ["OIDCFake"]


class OIDCFake:
    def __init__(self, *, email: str = "ada@example.com", name: str = "Ada Lovelace", host: str = "127.0.0.1",
                 port: int = 0, client_id: str = "orchestra-dashboard", client_secret: str | None = None) -> None:
        self.email, self.name, self.host, self.port = email, name, host, port
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.key = RSAKey.generate_key(2048, parameters={"kid": "fake-1", "use": "sig", "alg": "RS256"},
                                       private=True)
        self._codes: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, dict[str, Any]] = {}
        self._log: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()

    # ---------------------------------------------------------------- addresses

    @property
    def issuer(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._log)

    def _note(self, path: str, **what: Any) -> None:
        with self._lock:
            self._log.append({"path": path, **what})

    # ---------------------------------------------------------------- endpoints

    async def discovery(self, request: web.Request) -> web.Response:
        self._note("discovery")
        return web.json_response({
            "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo", "response_types_supported": ["code"],
            "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"], "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        })

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        self._note("authorize", client_id=q.get("client_id"), redirect_uri=q.get("redirect_uri"),
                   scope=q.get("scope"))
        if q.get("client_id") != self.client_id or q.get("response_type") != "code" or not q.get("redirect_uri"):
            return web.json_response({"error": "invalid_request"}, status=400)
        code = secrets.token_urlsafe(16)
        self._codes[code] = {"redirect_uri": q["redirect_uri"], "nonce": q.get("nonce"),
                             "challenge": q.get("code_challenge"), "method": q.get("code_challenge_method")}
        back = {"code": code, **({"state": q["state"]} if "state" in q else {})}
        raise web.HTTPFound(f"{q['redirect_uri']}{'&' if '?' in q['redirect_uri'] else '?'}{urlencode(back)}")

    def _client_ok(self, request: web.Request, form: Any) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            from urllib.parse import unquote

            return unquote(user) == self.client_id and unquote(password) == self.client_secret
        return form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self._note("token", grant_type=form.get("grant_type"))
        if not self._client_ok(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = self._codes.pop(str(form.get("code", "")), None)
        if form.get("grant_type") != "authorization_code" or grant is None:
            return web.json_response({"error": "invalid_grant"}, status=400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return web.json_response({"error": "invalid_grant", "error_description": "redirect_uri"}, status=400)
        if grant["challenge"]:
            verifier = str(form.get("code_verifier", ""))
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if digest != grant["challenge"]:
                return web.json_response({"error": "invalid_grant", "error_description": "PKCE"}, status=400)
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "user-" + hashlib.sha1(self.email.encode()).hexdigest()[:12],
                  "aud": self.client_id, "iat": now, "exp": now + 600, "email": self.email, "email_verified": True,
                  "name": self.name}
        if grant["nonce"]:
            claims["nonce"] = grant["nonce"]
        access = secrets.token_urlsafe(24)
        self._tokens[access] = claims
        id_token = jwt.encode({"alg": "RS256", "kid": "fake-1"}, claims, self.key)
        return web.json_response({"access_token": access, "token_type": "Bearer", "expires_in": 600,
                                  "id_token": id_token, "scope": "openid email profile"})

    async def jwks(self, request: web.Request) -> web.Response:
        self._note("jwks")
        return web.json_response({"keys": [self.key.as_dict(private=False)]})

    async def userinfo(self, request: web.Request) -> web.Response:
        self._note("userinfo")
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        claims = self._tokens.get(token)
        if claims is None:
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response({k: claims[k] for k in ("sub", "email", "email_verified", "name")})

    # ---------------------------------------------------------------- life cycle

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/userinfo", self.userinfo)
        return app

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._runner = web.AppRunner(self._app())
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())  # type: ignore[union-attr]
        self._loop.close()

    def __enter__(self) -> "OIDCFake":
        self._thread = threading.Thread(target=self._serve, name="oidc-fake", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the OIDC fake did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
