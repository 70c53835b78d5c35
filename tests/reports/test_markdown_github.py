"""--markdown and --format github, line by line, on the real dfa sample."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fa_audit import ExitCode
from fa_audit.render.github import check_annotations, escape_data, escape_property
from fa_audit.render.markdown import cell, report_markdown
from fa_audit.report import AuditReport

from ..cli_runner import run
from ..conftest import SAMPLES

Audited = Callable[..., AuditReport]

MODE_1 = "Mode 1 (reference collapse): the BP gradient per unit of output error is h1 (blocks.0) 1.75e-08, "
MODE_2 = "Mode 2 (no depth utility): "


def test_markdown_report_reads_line_by_line(audited: Audited) -> None:
    lines = report_markdown(audited("dfa").to_dict()).splitlines()
    assert lines[0] == "### fa-audit: `dfa.pt` — WALK BACK"
    assert lines[2] == (
        "Accuracy 0.5466 ± 0.0078; aggregate Γ +0.179 ± 0.001 (mean over layers: read the per-layer column); "
        "deep Γ +0.090 ± 0.001 (h1..hL)."
    )
    table = lines[
        lines.index(
            "| layer | module | ‖h‖ | growth | ‖g‖ (BP) | cos Γ ± se | null μ ± σ | z | dir_stab ± se | fp64 |"
        ) :
    ]
    assert table[1] == "|---|---|---|---|---|---|---|---|---|---|"
    # The cosines carry the terminal's degenerate mark and its footnote (reference validity failed).
    assert (
        table[2]
        == "| h0 | embed | 1017 | 1.89e+06 | 0.003 | +0.538 ± 0.004* | +0.000 ± 0.037 | 14.4 | 0.683 ± 0.024 | 1.0000 |"
    )
    assert (
        table[6]
        == "| h4 | blocks.3 | 1.98e+09 | — | 1.04e-08 | +0.059 ± 0.002* | +0.000 ± 0.047 | 1.26 | 0.421 ± 0.047 "
        "| 1.0000 |"
    )
    # ...after a blank line: a line right under a table is one more row of it on GitHub
    assert table[7] == ""
    assert table[8] == "\\* degenerate: reference validity failed, so this cosine does not measure useful credit"
    checks = lines[lines.index("| check | status | measured | threshold |") :]
    assert checks[2] == "| scale_stability | FAIL | max growth 1.89e+06× at h0 | growth ≤ 50.0× |"
    assert checks[3] == (
        "| reference_validity | FAIL | min ‖g‖/‖e‖ 1.75e-08 at h1; min ‖g‖ 1.04e-08 at h4; fp64 agreement ≥ 1.0000 "
        "| ‖g‖/‖e‖ ≥ 1e-07 (‖g‖ ≥ 1e-07 shown); fp64 ≥ 0.999 |"
    )
    # h2's z is 2.37 (2.7 ± 0.4 over null seeds): one deep layer of four above the band.
    assert checks[4].startswith("| depth_utility | FAIL | margin not assessed; credit reach 0.25 |")
    assert "**Verdict: WALK BACK** (exit code 1)." in lines
    # Every finding of the terminal, with its mark: failures, notes and the not-assessed part.
    assert any(line.startswith(f"- ✗ reference_validity: {MODE_1}") for line in lines)
    assert any(line.startswith("- · reference_validity: direction stability > 0.3 at h0 0.68") for line in lines)
    reach = f"- ✗ depth_utility: {MODE_2}credit reach 0.25 < 0.5: only 1 of 4 deep layers"
    assert any(line.startswith(reach) for line in lines)
    # The part left unassessed beside the failing one is a note, not a failure.
    assert any(line.startswith("- · depth_utility: functional part not assessed") for line in lines)
    settings = lines[lines.index("Settings:") :]
    assert settings[2] == "- fa-audit 0.1.0; arch `resmlp`, method `dfa`; 4096 eval samples"
    assert any(line.startswith("- `eval.safetensors`: SHA-256 `100c8d59") for line in settings)
    assert "- null in closed form over every eval sample, seed 0, batch size 256, device cpu" in settings
    assert "- thresholds `scale_stability`: max_block_growth = 50.0" in settings


def test_markdown_cells_escape_pipes_and_flatten_newlines() -> None:
    assert cell("a|b\nc") == "a\\|b c"


def test_cli_writes_the_markdown_file(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    code, _, _ = run("run", SAMPLES / "dfa_penalty.pt", "--markdown", out, "--quiet")
    assert code == ExitCode.WALK_BACK
    text = out.read_text(encoding="utf-8")
    assert text.startswith("### fa-audit: `dfa_penalty.pt` — WALK BACK\n")
    assert "| depth_utility | FAIL |" in text
    assert list(tmp_path.iterdir()) == [out]


def test_github_annotations_line_by_line(audited: Audited) -> None:
    lines = check_annotations(audited("dfa").to_dict())
    assert lines[0] == (
        "::error title=fa-audit scale_stability (dfa.pt)::h0→next (embed): growth 1.89e+06× (95 %25 interval "
        "1.66e+06 … 2.15e+06) > 50×: the residual stream explodes, the structural cause of reference collapse"
    )
    assert lines[1].startswith(f"::error title=fa-audit reference_validity (dfa.pt)::{MODE_1}h2 (blocks.1) 1.75e-08")
    assert "%0A" not in lines[1] and "\n" not in lines[1]  # one finding for the four collapsed layers
    assert lines[2] == (
        f"::error title=fa-audit depth_utility (dfa.pt)::{MODE_2}credit reach 0.25 < 0.5: only 1 of 4 deep "
        "layers have a cosine above the null band (z ≥ 3); credit concentrated at the ends: the aggregate Γ is "
        "carried by 2 layers (h0, h1)"
    )
    assert len(lines) == 3


def test_workflow_command_escaping() -> None:
    assert escape_data("50% of\r\nlayers") == "50%25 of%0D%0Alayers"
    assert escape_property("fa-audit x (a:b,c.pt)") == "fa-audit x (a%3Ab%2Cc.pt)"


def test_a_trusted_checkpoint_gives_no_annotation(audited: Audited) -> None:
    assert check_annotations(audited("bp", baseline=True).to_dict()) == []


def test_github_format_appends_the_step_summary(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    code, out, _ = run("run", SAMPLES / "dfa.pt", "--format", "github", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert code == ExitCode.WALK_BACK
    assert out.splitlines()[0].startswith("::error title=fa-audit scale_stability (dfa.pt)::")
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n### fa-audit: `dfa.pt` — WALK BACK\n")


def test_github_format_cannot_share_stdout_with_json() -> None:
    code, _, err = run("run", SAMPLES / "dfa.pt", "--format", "github", "--json", "-")
    assert code == ExitCode.INPUT_ERROR and "give --json a file" in err


def test_compare_github_annotations_name_the_regressions() -> None:
    code, out, _ = run("compare", SAMPLES / "dfa_penalty.pt", SAMPLES / "dfa.pt", "--format", "github")
    annotations = [line for line in out.splitlines() if line.startswith("::")]
    assert code == ExitCode.WALK_BACK and len(annotations) == 2
    assert annotations[0].startswith(
        "::error title=fa-audit regression (dfa.pt)::scale_stability: passes for A, fails for B"
    )


def test_compare_and_summarize_markdown_keep_the_marks_and_findings(tmp_path: Path) -> None:
    code, out, _ = run("compare", SAMPLES / "dfa_penalty.pt", SAMPLES / "dfa.pt", "--markdown", "-")
    assert code == ExitCode.WALK_BACK
    assert "| +0.538 ± 0.004* |" in out and f"- ✗ reference_validity: {MODE_1}" in out
    report = tmp_path / "dfa.json"
    run("run", SAMPLES / "dfa.pt", "--json", report, "--quiet")
    code, out, _ = run("summarize", report, "--markdown", "-")
    assert "| +0.538 ± 0.004* |" in out and f"- ✗ depth_utility: {MODE_2}credit reach 0.25 < 0.5" in out
