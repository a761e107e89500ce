"""`kubernetes-validate --strict` for the controller tests, with its schema files read once per process.

kubernetes_validate reads and parses the ~1 MB `_definitions.json` on every call; caching that read (the
parsed schemas are never modified) keeps the per-preset golden tests fast. Same schemas, same verdicts.
"""

from __future__ import annotations

import functools

import kubernetes_validate
import kubernetes_validate.utils as _utils

K8S_VERSION = "1.37.0"

if not hasattr(_utils.schema_contents, "cache_info"):
    _utils.schema_contents = functools.lru_cache(maxsize=None)(_utils.schema_contents)


def validate_strict(manifests: list[dict] | dict) -> None:
    """Raise AssertionError naming the object and the field when a manifest is not strictly valid."""
    for manifest in manifests if isinstance(manifests, list) else [manifests]:
        try:
            kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            raise AssertionError(f"{manifest['kind']} {manifest['metadata'].get('name')}: {err.message} at "
                                 f"{'.'.join(str(p) for p in err.path)}") from None
