import os

from rich.console import Console

from appliance.demo import _Stages


def test_stages_print_each_stage_time_and_sum_them() -> None:
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    stages = _Stages(console)
    stages.start("1. ingest")
    stages.start("2. reflections")  # starting one ends the one before
    summary = stages.summary()
    assert list(stages.times) == ["ingest", "reflections"]
    assert summary.startswith(tuple("0123456789")) and " s in all (ingest 0, reflections 0)" in summary
    text = console.export_text()
    assert "(ingest: 0 s)" in text and "(reflections: 0 s)" in text
    stages.summary()
    assert list(stages.times) == ["ingest", "reflections"] and "(reflections:" not in console.export_text()  # ends once
