"""read_report: another command's report.json, checked (folder, JSON, command, schema version)."""

from __future__ import annotations

import json

import pytest

from sdguard.core.errors import InputError
from sdguard.report import SCHEMA_VERSION, Report, read_report


def _written(folder, command="audit data", results=None):
    report = Report(command, None)
    report.results = results if results is not None else {"clusters": [], "threshold": {"value": 0.9}}
    report.write(folder)
    return folder


def test_reads_the_report_of_the_expected_command(tmp_path):
    folder = _written(tmp_path / "a")
    got = read_report(folder, "audit data", "--clusters")
    assert got.command == "audit data" and got.schema_version == SCHEMA_VERSION
    assert got.results == {"clusters": [], "threshold": {"value": 0.9}} and got.folder == folder
    assert read_report(str(folder), "audit data", "--clusters").results == got.results


def _refused(folder, match):
    with pytest.raises(InputError, match=match) as info:
        read_report(folder, "audit data", "--clusters")
    message = str(info.value)
    assert message.startswith(f"--clusters {str(folder)!r} ") and message.endswith(".")
    assert message.count(". ") == 0  # one sentence
    return message


def test_missing_file_or_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", "holds no report.json")
    _refused(tmp_path / "absent", "holds no report.json")


def test_wrong_command(tmp_path):
    message = _refused(_written(tmp_path / "g", command="audit generations"), "is the output of")
    assert "`sdguard audit generations`" in message and "`sdguard audit data`" in message


def test_unknown_schema_version(tmp_path):
    folder = _written(tmp_path / "v")
    data = json.loads((folder / "report.json").read_text())
    for version in (SCHEMA_VERSION + 1, None, "1", True):
        data["schema_version"] = version
        (folder / "report.json").write_text(json.dumps(data))
        _refused(folder, "schema version")


def test_corrupt_json_and_not_a_report(tmp_path):
    folder = _written(tmp_path / "c")
    (folder / "report.json").write_text('{"command": "audit data", "results": ')
    _refused(folder, "corrupt report.json")
    (folder / "report.json").write_bytes(b"\xff\xfe\x00garbage")
    _refused(folder, "report.json")
    (folder / "report.json").write_text("[1, 2]")
    _refused(folder, "not an sdguard report")
    (folder / "report.json").write_text(json.dumps({"command": "audit data", "schema_version": SCHEMA_VERSION,
                                                    "results": None}))
    _refused(folder, "without its results")


def test_generation_audit_refuses_another_commands_output_as_clusters(tmp_path):
    pytest.importorskip("pyarrow.parquet")
    from sdguard.audit.generation_replication import clusters_from_audit

    folder = _written(tmp_path / "g", command="audit generations")
    with pytest.raises(InputError, match="--clusters .* is the output of `sdguard audit generations`"):
        clusters_from_audit(str(folder), None)
    with pytest.raises(InputError, match="--clusters .* holds no clusters.parquet"):
        clusters_from_audit(str(_written(tmp_path / "d")), None)
