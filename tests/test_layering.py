"""Headless modules never pull in the UI or hardware stacks (DESIGN: dependency direction)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("textual", "cv2", "serial", "usb", "pyzbar")


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("pos_loyalty.domain.engine", HEAVY + ("sqlalchemy", "fastapi", "pydantic", "qrcode")),
        ("pos_loyalty.domain.refund", HEAVY + ("sqlalchemy", "fastapi", "pydantic")),
        ("pos_loyalty.ledger.verify", HEAVY + ("fastapi",)),
        ("pos_loyalty.service", HEAVY + ("fastapi",)),
        ("pos_loyalty.api", HEAVY),
        ("pos_loyalty.cli", HEAVY + ("fastapi", "uvicorn")),
        ("drivers.payment_guard", HEAVY + ("pos_loyalty",)),
    ],
)
def test_module_imports_stay_headless(module: str, forbidden: tuple[str, ...]) -> None:
    code = (
        "import sys, importlib; importlib.import_module(sys.argv[1]); "
        "bad = [m for m in sys.argv[2:] if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, module, *forbidden], capture_output=True, text=True
    )
    assert proc.returncode == 0, f"{module} imported {proc.stdout.strip()} {proc.stderr}"


def test_package_exports_python_api() -> None:
    import pos_loyalty

    assert pos_loyalty.Service.__name__ == "Service"
    with pytest.raises(AttributeError):
        _ = pos_loyalty.nothing_here
