"""Client keys of the proxy: who may spend the operator's upstream keys, and how much.

A keys file is YAML holding, per client, a name and the SHA-256 of its key (never the key)::

    keys:
      - name: alice
        sha256: 3f2a...            # written by `trouter keys add alice --file keys.yaml`
        policy: cost-first         # optional: the policy of model "trouter" for this key
        daily_budget_usd: 5.0      # optional: 429 once real usage reaches it (UTC day)

Keys are 256-bit random tokens (``secrets.token_urlsafe(32)``), so one fast hash is enough: no
key can be guessed from its hash by trying keys. A presented key is hashed and compared with
every stored hash by :func:`hmac.compare_digest`. ``TROUTER_API_KEYS`` holds keys in the
environment instead, as ``name=key`` pairs separated by commas.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trouter.config import TrouterError

KEYS_ENV = "TROUTER_API_KEYS"
KEY_PREFIX = "trk-"
#: A keys file holds one short entry per client; a larger file is a mistake, not a keys file.
MAX_KEYS_FILE_BYTES = 1_000_000


class KeysFileError(TrouterError, ValueError):
    """A keys file or ``TROUTER_API_KEYS`` that cannot be used."""


class ClientKey(BaseModel):
    """One client: its name, the hash of its key, its default policy and daily budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=100)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    policy: str | None = None
    daily_budget_usd: float | None = Field(default=None, ge=0)


class KeysDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[ClientKey] = Field(default_factory=list)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def read_keys_file(path: Path) -> list[ClientKey]:
    """The entries of a keys file; :class:`KeysFileError` naming the file otherwise."""
    try:
        if path.stat().st_size > MAX_KEYS_FILE_BYTES:
            raise KeysFileError(f"{path}: larger than {MAX_KEYS_FILE_BYTES} bytes")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {"keys": []}
        document = KeysDocument.model_validate(data)
    except OSError as err:
        raise KeysFileError(f"cannot read the keys file {path}: {err.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise KeysFileError(f"{path} is not a YAML keys file: {err}") from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise KeysFileError(f"{path}: {where}: {first['msg']}") from None
    names = [k.name for k in document.keys]
    if len(set(names)) != len(names):
        raise KeysFileError(f"{path}: a key name appears more than once")
    return document.keys


def keys_from_env(value: str) -> list[ClientKey]:
    """``name=key,name=key`` (a bare key is named ``env-N``) as hashed entries."""
    entries = []
    for i, item in enumerate(p.strip() for p in value.split(",") if p.strip()):
        name, sep, key = item.partition("=")
        if not sep:
            name, key = f"env-{i + 1}", item
        if len(key) < 16:
            raise KeysFileError(f"{KEYS_ENV}: the key of {name!r} is shorter than 16 characters")
        entries.append(ClientKey(name=name, sha256=digest(key)))
    return entries


def add_key(
    path: Path, name: str, policy: str | None = None, daily_budget_usd: float | None = None
) -> str:
    """Store the hash of a new key under ``name`` in ``path`` and return the key itself."""
    key = new_key()
    with FileLock(f"{path}.lock", timeout=10):
        existing = read_keys_file(path) if path.exists() else []
        if any(k.name == name for k in existing):
            raise KeysFileError(f"{path} already has a key named {name!r}")
        entry = ClientKey(
            name=name, sha256=digest(key), policy=policy, daily_budget_usd=daily_budget_usd
        )
        document = {"keys": [k.model_dump(exclude_none=True) for k in [*existing, entry]]}
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        tmp.chmod(0o600)
        os.replace(tmp, path)
    return key


@dataclass
class KeyRing:
    """The clients allowed to call the proxy, and what each has spent today (UTC)."""

    clients: list[ClientKey]

    def __post_init__(self) -> None:
        self._spent: dict[str, tuple[dt.date, float]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.clients)

    def identify(self, authorization: str | None) -> ClientKey | None:
        """The client whose key is the ``Bearer`` token, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = digest(token.strip())
        found = None
        for client in self.clients:  # every entry is compared: the time does not say which
            if hmac.compare_digest(presented, client.sha256):
                found = client
        return found

    def spent_today(self, client: ClientKey) -> float:
        day, spent = self._spent.get(client.name, (None, 0.0))
        return spent if day == _today() else 0.0

    def remaining_usd(self, client: ClientKey | None) -> float | None:
        """What the client may still spend today; None without a daily budget."""
        if client is None or client.daily_budget_usd is None:
            return None
        return max(0.0, client.daily_budget_usd - self.spent_today(client))

    def charge(self, client: ClientKey | None, usd: float | None) -> None:
        if client is None or not usd:
            return
        self._spent[client.name] = (_today(), self.spent_today(client) + usd)


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def load_key_ring(keys_file: Path | None, env: str | None = None) -> KeyRing:
    """Clients from the keys file and/or ``TROUTER_API_KEYS`` (empty: no authentication)."""
    clients = read_keys_file(keys_file) if keys_file is not None else []
    env = os.environ.get(KEYS_ENV) if env is None else env
    if env:
        clients = [*clients, *keys_from_env(env)]
    return KeyRing(clients)
