"""``zserve db upgrade|current``: the store's schema, migrated explicitly.

A server opening a store that is behind migrates it (under a lock), unless
``ZSERVE_STORE_MIGRATE=never``: then it refuses it. Hosts that share one database are upgraded
once, by ``zserve db upgrade`` run before they start (in Kubernetes, the migration Job, with
``never`` on the pods), so that none of them migrates while the others serve. ``upgrade``
migrates whatever that setting says.
"""

from __future__ import annotations

import typer

from zserve.cli._output import print_json
from zserve.settings import Settings

app = typer.Typer(help="Show and upgrade the store's schema.", no_args_is_help=True)

STORE_HELP = (
    "The store: a SQLAlchemy URL (sqlite:///path/zserve.db, postgresql://user:pw@host/db) or "
    "a SQLite file's path (default ZSERVE_STORE_URL)."
)


def _url(store: str | None) -> str:
    from zserve.store.revision import store_url_of

    return store_url_of(store) if store else Settings.from_env().store_url


def _shown(revision: str | None) -> str:
    return revision if revision is not None else "none"


@app.command("upgrade")
def upgrade(
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Migrate the store to this zserve's schema.

    Prints the revision before and after; a store already at head is left as it is, and a
    SQLite file that is missing is made. Hosts sharing a database run it once, before they
    start."""
    from zserve.settings import hide_password
    from zserve.store.revision import upgrade as upgrade_store
    from zserve.store.schema import SCHEMA_HEAD

    url = _url(store)
    before, after = upgrade_store(url)
    if json_:
        print_json({"store": hide_password(url), "before": before, "after": after,
                    "head": SCHEMA_HEAD, "upgraded": before != after})  # fmt: skip
        return
    if before == after:
        typer.echo(f"Store {hide_password(url)}: already at revision {_shown(after)} (head)")
    else:
        typer.echo(
            f"Store {hide_password(url)}: upgraded from revision {_shown(before)} to "
            f"{_shown(after)} (head)"
        )


@app.command("current")
def current(
    store: str | None = typer.Option(None, "--store", help=STORE_HELP),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Print the store's schema revision.

    And whether it is this zserve's head. Reads only: a store that does not exist is not made
    (exit 3)."""
    from zserve.settings import hide_password
    from zserve.store.revision import known_revisions, revision_at
    from zserve.store.schema import SCHEMA_HEAD

    url = _url(store)
    revision = revision_at(url)
    if json_:
        print_json({"store": hide_password(url), "revision": revision, "head": SCHEMA_HEAD,
                    "at_head": revision == SCHEMA_HEAD})  # fmt: skip
        return
    if revision == SCHEMA_HEAD:
        state = "head"
    elif revision is None or revision in known_revisions():
        state = f"behind head {SCHEMA_HEAD}: run `zserve db upgrade`"
    else:
        state = f"unknown to this zserve, whose head is {SCHEMA_HEAD}: a newer zserve wrote it"
    typer.echo(f"Store {hide_password(url)}: revision {_shown(revision)} ({state})")
