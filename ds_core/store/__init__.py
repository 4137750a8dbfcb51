"""The results store: sampled runs keyed by `RunKey`, their episodes, a JSON blob cache (SQLite),
and the one JSON policy for what DS-Lens writes (ds_core.store.jsonio)."""

from ds_core.store.jsonio import canonical_json, digest_of, dumps, from_jsonable, key_digest, to_jsonable
from ds_core.store.results import (
    DB_NAME,
    SCHEMA_VERSION,
    FrozenDict,
    ResultsStore,
    RunKey,
    RunRecord,
    StoreBusy,
    StoreError,
    default_data_dir,
)

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "FrozenDict",
    "ResultsStore",
    "RunKey",
    "RunRecord",
    "StoreBusy",
    "StoreError",
    "canonical_json",
    "default_data_dir",
    "digest_of",
    "dumps",
    "from_jsonable",
    "key_digest",
    "to_jsonable",
]
