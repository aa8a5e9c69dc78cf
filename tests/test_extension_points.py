"""One list per extension point — merge methods, document readers, endpoint kinds — and what is
derived from it: the CLI's choices and help, the policy schema, the readers' dispatch."""

from __future__ import annotations

import click
import pytest
from pydantic import ValidationError

from appliance.cli import cli
from appliance.corpus.readers import MEDIA_TYPES, READERS, SHORT_NAMES, media_type_for, reader_names
from appliance.memory.merge import MERGE_METHODS
from appliance.policy import ENDPOINT_KINDS, UPDATE_METHODS, Endpoint, Schedules


def _option(command: click.Command, name: str) -> click.Option:
    return next(p for p in command.params if p.name == name)  # type: ignore[return-value]


def test_update_methods_derive_from_the_merge_methods() -> None:
    from appliance.memory.update import UPDATE_METHODS as PIPELINE_METHODS

    assert UPDATE_METHODS == ("sequential", *MERGE_METHODS, "retrain")
    assert PIPELINE_METHODS == UPDATE_METHODS  # the pipeline's own copy (see the report): the same list
    assert list(_option(cli.commands["update"], "method").type.choices) == list(UPDATE_METHODS)
    for method in UPDATE_METHODS:
        assert Schedules(inbox="/srv/inbox", update_method=method).update_method == method
    with pytest.raises(ValidationError):
        Schedules(inbox="/srv/inbox", update_method="average")


def test_endpoint_kinds_are_the_schema_and_say_what_leaves() -> None:
    assert set(ENDPOINT_KINDS) == {"llamacpp", "openai"}
    for kind, external in ENDPOINT_KINDS.items():
        fields = {"url": "https://llm.example/v1"} if external else {}
        assert Endpoint(name="e", kind=kind, model="m", purposes=["executive"], **fields).external is external
    with pytest.raises(ValidationError, match="llamacpp|openai"):
        Endpoint(name="e", kind="vllm", model="m", purposes=["executive"])


def test_readers_are_one_list() -> None:
    assert reader_names() == "txt, md, html, pdf, docx"
    assert MEDIA_TYPES == {s: r.media_type for r in READERS for s in r.suffixes}
    assert SHORT_NAMES == {r.media_type: r.name for r in READERS}
    from pathlib import Path

    assert media_type_for(Path("x.HTM")) == "text/html" and media_type_for(Path("x.odt")) is None
    assert reader_names() in cli.commands["ingest"].help
