"""`tracectl profile validate`: ok lines, error lines with path and fix, exit 1 on any error."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_profiles import LIBRARY
from tracectl.__main__ import main


def test_validate_reports_each_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("address: 2", "address: 70000"))
    with pytest.raises(SystemExit) as exit_:
        main(["profile", "validate", str(good), str(bad)])
    assert exit_.value.code == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{good}: ok (modbus_tcp, 4 tags)",
        f"{bad}: tags[1].address: Input should be less than or equal to 65535",
    ]


def test_validate_passes_on_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    main(["profile", "validate", *map(str, sorted(LIBRARY.glob("*.yaml")))])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(list(LIBRARY.glob("*.yaml")))
    assert all(": ok (" in line for line in lines), lines
