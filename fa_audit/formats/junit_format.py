"""``--junit``: JUnit XML, read by GitLab, Jenkins and most test dashboards. A testsuite per
audited checkpoint and a testcase per check: ``failure`` for a failing check, ``skipped``
for one not assessed, each with the measured value and the threshold in its message. For
``compare``, one testsuite whose testcases fail where B regressed from A."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import FileFormat, Result
from .check_results import check_text, regressions_by_check, reports_of

if TYPE_CHECKING:  # imported by junit(): 4-6 ms of every run's start-up otherwise
    from xml.etree import ElementTree as ET

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
"""Characters XML 1.0 cannot hold, even escaped: what its Char production (tab, newline, carriage
return, U+0020-U+D7FF, U+E000-U+FFFD, U+10000-U+10FFFF) leaves out. Written as the class left out,
not its negation: that compiled in 8 ms, on every run's start-up."""


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _case(suite: ET.Element, classname: str, name: str, outcome: str | None, text: str) -> None:
    """A testcase; ``outcome`` is ``failure``, ``skipped`` or None (passed)."""
    from xml.etree import ElementTree as ET

    case = ET.SubElement(suite, "testcase", classname=_xml(classname), name=name, time="0")
    if outcome is not None:
        ET.SubElement(case, outcome, message=_xml(text.splitlines()[0]), type=name).text = _xml(text)
    else:
        ET.SubElement(case, "system-out").text = _xml(text)


def _suite(root: ET.Element, name: str) -> ET.Element:
    from xml.etree import ElementTree as ET

    return ET.SubElement(root, "testsuite", name=_xml(name), time="0")


def _report_suite(root: ET.Element, report: dict[str, Any]) -> None:
    suite = _suite(root, report["checkpoint"])
    outcome = {"fail": "failure", "not_assessed": "skipped"}
    for check in report["checks"]:
        _case(suite, f"fa-audit.{Path(report['checkpoint']).name}", check["name"],
              outcome.get(check["status"]), check_text(check))  # fmt: skip


def _comparison_suite(root: ET.Element, comparison: dict[str, Any]) -> None:
    a, b = comparison["a"], comparison["b"]
    suite = _suite(root, f"{a['checkpoint']} -> {b['checkpoint']}")
    regressed = regressions_by_check(comparison)
    for check in b["checks"]:
        name = check["name"]
        text = regressed.get(name, f"{name}: no regression from A\n{check_text(check)}")
        _case(suite, f"fa-audit.compare.{Path(b['checkpoint']).name}", name, "failure" if name in regressed else None,
              text)  # fmt: skip


def _count(root: ET.Element) -> None:
    """The tests/failures/skipped/errors attributes every consumer reads, on each level."""
    for element in [*root.iter("testsuite"), root]:
        cases = list(element.iter("testcase"))
        element.set("tests", str(len(cases)))
        element.set("failures", str(sum(case.find("failure") is not None for case in cases)))
        element.set("skipped", str(sum(case.find("skipped") is not None for case in cases)))
        element.set("errors", "0")


def junit(result: Result) -> bytes:
    from xml.etree import ElementTree as ET

    root = ET.Element("testsuites", name="fa-audit")
    if result.kind == "comparison":
        _comparison_suite(root, result.shown)
    else:
        for report in reports_of(result):
            _report_suite(root, report)
    _count(root)
    ET.indent(root)
    written: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return written + b"\n"


JUNIT = FileFormat("junit", "the JUnit XML report", to_stdout=True, write=junit)
