"""The generated documents in docs/ must match what the code generates now."""

from __future__ import annotations

from pathlib import Path

from adapters.cli import main
from adapters.cli.docs import DIAGRAM_DOC, render_diagram_doc
from schemas.generate import render_schemas

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_json_schemas_are_current() -> None:
    rendered = render_schemas()
    on_disk = {p.name for p in (DOCS / "schemas").glob("*.json")}
    assert on_disk == set(rendered), "docs/schemas has missing or extra files: run `campaign-fsm schema`"
    for name, content in rendered.items():
        assert (DOCS / "schemas" / name).read_bytes() == content, f"{name} is stale: run `campaign-fsm schema`"


def test_state_diagram_is_current() -> None:
    assert (DOCS / DIAGRAM_DOC).read_text() == render_diagram_doc(), "run `campaign-fsm diagram`"


def test_diagram_shows_every_command_edge_and_the_gate() -> None:
    text = render_diagram_doc()
    for edge in ("STOPPED --> STARTING: start", "RUNNING --> PAUSING: pause", "PAUSED --> STARTING: resume",
                 "RUNNING --> STOPPING: stop", "PAUSED --> STOPPING: stop", "FAILED --> RUNNING: reset",
                 "STOPPING --> STOPPED: platform", "STARTING --> FAILED: platform"):
        assert edge in text
    assert "STOPPING --> STARTING" not in text


def test_cli_writes_both(tmp_path: Path, capsys: object) -> None:
    assert main(["schema", "--out", str(tmp_path / "s")]) == 0
    assert main(["diagram", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "s" / "command.json").exists() and (tmp_path / DIAGRAM_DOC).exists()
