"""Audit tools: `campaign.events` read back, checked and reported, for people and scripts.

- `replay`: `read_events` reads the topic into `fsm.audit`'s timelines; `rebuilt_state_records` and
  `write_state_records` rebuild `campaign.state` from the events; `render_timelines`,
  `timelines_json` print them;
- `report`: `build_report`, the audit report document (and `render_text`, its text form);
- `report_html`: `render_html`, the same report as one self-contained HTML page.

The commands `campaign-fsm replay` and `campaign-fsm audit` live with the command line.
"""

from .replay import (
    read_events,
    read_requesters,
    read_state_records,
    rebuilt_state_records,
    render_timelines,
    timelines_json,
    write_state_records,
)
from .report import build_report, render_text
from .report_html import render_html

__all__ = [
    "build_report",
    "read_events",
    "read_requesters",
    "read_state_records",
    "rebuilt_state_records",
    "render_html",
    "render_text",
    "render_timelines",
    "timelines_json",
    "write_state_records",
]
