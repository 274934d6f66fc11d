"""The entitlements catalog (`ENTITLEMENTS_FILE`): what each Dodo product and add-on grants.

    revoke_on_partial_refund = false          # default for every product
    max_units_per_line = 1000                 # quantity one cart line may have (the default)
    max_units_per_order = 10000               # all the order's catalog lines together (the default)

    [products.pdt_e9mUw084cWnu0tz]
    name = "Acme Pro"                         # optional, shown by /v1/licenses/activate
    license_key = { activations_limit = 2, expires_after_days = 365, prefix = "ACME" }
    files = ["files/guide.pdf", "s3://bucket/key.zip"]
    hooks = ["https://app.example.com/provision"]
    revoke_on_partial_refund = true           # optional, overrides the default
    max_units = 50                            # optional, overrides max_units_per_line

    [addons.adn_seat]
    seats = 1

A catalog that cannot be read or does not fit this shape stops start-up with a `CatalogError`
that names the file, the line and what is wrong.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.scrub import redact_url
from worker.settings import ConfigError

_TOML_LINE = re.compile(r"\(at line (\d+), column (\d+)\)")


class CatalogError(ConfigError):
    """The catalog cannot be used; the message reads `FILE:LINE: what is wrong`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LicenseKeySpec(_Strict):
    activations_limit: int | None = Field(default=None, ge=0)  # None: unlimited
    expires_after_days: int | None = Field(default=None, ge=1)
    prefix: str = Field(default="", max_length=16, pattern=r"^[A-Za-z0-9]*$")
    bits: int = Field(default=160, ge=128, le=320)
    group_size: int = Field(default=4, ge=2, le=16)


class FileSpec(_Strict):
    ref: str  # as written in the catalog: a relative path or s3://bucket/key
    path: Path | None = None  # resolved local file
    bucket: str | None = None
    key: str | None = None

    @property
    def name(self) -> str:
        return Path(self.key or self.ref).name


class ProductSpec(_Strict):
    name: str | None = None
    license_key: LicenseKeySpec | None = None
    files: list[str] = Field(default_factory=list)
    hooks: list[str] = Field(default_factory=list)
    revoke_on_partial_refund: bool | None = None
    max_units: int | None = Field(default=None, ge=1)  # units one cart line may grant

    @field_validator("license_key", mode="before")
    @classmethod
    def _true_means_defaults(cls, value: Any) -> Any:
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @field_validator("hooks")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"hook {redact_url(url)!r} is not an http(s) URL")
        return urls


class AddonSpec(_Strict):
    seats: int = Field(ge=0)


class CatalogFile(_Strict):
    revoke_on_partial_refund: bool = False
    max_units_per_line: int = Field(default=1000, ge=1)  # unless the product sets `max_units`
    max_units_per_order: int = Field(default=10_000, ge=1)  # over the order's catalog products
    products: dict[str, ProductSpec] = Field(default_factory=dict)
    addons: dict[str, AddonSpec] = Field(default_factory=dict)


class Catalog:
    """The loaded catalog. A product it does not list grants nothing."""

    def __init__(self, spec: CatalogFile, files: dict[str, FileSpec], source: Path | None = None) -> None:
        self.spec = spec
        self.files = files
        self.source = source

    @classmethod
    def empty(cls) -> Catalog:
        return cls(CatalogFile(), {})

    def product(self, product_id: str | None) -> ProductSpec | None:
        return self.spec.products.get(product_id) if product_id else None

    def file(self, ref: str) -> FileSpec | None:
        return self.files.get(ref)

    def seats(self, addons: list[tuple[str, int]]) -> int:
        """Extra activations for a subscription's add-ons: sum of quantity x seats."""
        total = 0
        for addon_id, quantity in addons:
            spec = self.spec.addons.get(addon_id)
            if spec is not None:
                total += max(0, quantity) * spec.seats
        return total

    def revokes_on_partial_refund(self, product_id: str) -> bool:
        product = self.product(product_id)
        if product is not None and product.revoke_on_partial_refund is not None:
            return product.revoke_on_partial_refund
        return self.spec.revoke_on_partial_refund


def load_catalog(path: Path | None) -> Catalog:
    """Read and check the catalog at `path`; no path means an empty catalog (nothing is granted)."""
    if path is None:
        return Catalog.empty()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read the entitlements catalog: {exc.strerror or exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_LINE.search(message)
        line = found.group(1) if found else "1"
        raise CatalogError(f"{path}:{line}: not valid TOML: {_TOML_LINE.sub('', message).strip()}") from None
    try:
        spec = CatalogFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = [str(p) for p in err["loc"]]
        where = ".".join(loc) or "catalog"
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise CatalogError(f"{path}:{line_of(text, loc)}: {where}: "
                           f"{err['msg'].removeprefix('Value error, ')}{more}") from None
    files: dict[str, FileSpec] = {}
    for product_id, product in spec.products.items():
        for ref in product.files:
            files[ref] = _file_spec(path, text, product_id, ref)
    return Catalog(spec, files, source=path)


def _file_spec(catalog_path: Path, text: str, product_id: str, ref: str) -> FileSpec:
    if ref.startswith("s3://"):
        bucket, _, key = ref.removeprefix("s3://").partition("/")
        if not bucket or not key:
            raise CatalogError(f"{catalog_path}:{line_of(text, ['products', product_id, 'files'])}: "
                               f"products.{product_id}.files: {ref!r} is not s3://bucket/key")
        return FileSpec(ref=ref, bucket=bucket, key=key)
    local = (catalog_path.parent / ref).resolve()
    if not local.is_file():
        raise CatalogError(f"{catalog_path}:{line_of(text, ['products', product_id, 'files'])}: "
                           f"products.{product_id}.files: {ref!r} is not a file (looked at {local})")
    return FileSpec(ref=ref, path=local)


def _header_pattern(parts: list[str]) -> re.Pattern[str]:
    keys = r"\s*\.\s*".join(rf"(?:{re.escape(p)}|\"{re.escape(p)}\"|'{re.escape(p)}')" for p in parts)
    return re.compile(rf"^\s*\[\s*{keys}\s*\]\s*(#.*)?$")


def _key_pattern(key: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')\s*[=.]")


def line_of(text: str, loc: list[str]) -> int:
    """Best effort: the line of the table (and key) a validation error points at.

    Finds the longest prefix of `loc` written as a `[table]` header, then the first line in that
    table that sets the next key; falls back to the header, then to line 1."""
    lines = text.splitlines()
    for depth in range(len(loc), 0, -1):
        header = _header_pattern(loc[:depth])
        for index, line in enumerate(lines):
            if not header.match(line):
                continue
            if depth == len(loc):
                return index + 1
            key = _key_pattern(loc[depth])
            for offset, inner in enumerate(lines[index + 1:], start=index + 2):
                if inner.lstrip().startswith("["):
                    break
                if key.match(inner):
                    return offset
            return index + 1
    if loc:
        key = _key_pattern(loc[0])
        for index, line in enumerate(lines):
            if key.match(line):
                return index + 1
    return 1
