"""``pos-loyalty devices`` and ``pos-loyalty cards`` through ``cli.main``, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers import cards
from pos_loyalty import cli
from pos_loyalty.domain.cardcode import is_valid_card_code
from tests.drivers import synth


def run(capsys: pytest.CaptureFixture[str], tmp: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = cli.main(["--data-dir", str(tmp), *args])
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    paths = {}
    both = synth.background(rng, 480, 640)
    both = synth.place(
        both, synth.qr_image("PL0000001234567"), rng, scale=1, angle=8, tilt=0.1, center=(170, 240)
    )
    both = synth.place(
        both,
        synth.linear_image("4006381333931", "EAN13"),
        rng,
        scale=1,
        angle=-5,
        tilt=0,
        center=(470, 240),
    )
    paths["both"] = tmp_path / "both.jpg"
    cv2.imwrite(str(paths["both"]), both)
    paths["blank"] = tmp_path / "blank.png"
    cv2.imwrite(str(paths["blank"]), synth.background(rng, 120, 160))
    paths["card"] = tmp_path / "card.png"
    cv2.imwrite(
        str(paths["card"]),
        np.pad(synth.qr_image("%B4111111111111111^DOE/JOHN^2512101?"), 20, constant_values=255),
    )
    return paths


def test_decode_json_one_object_per_image(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, images: dict[str, Path]
) -> None:
    code, out, err = run(
        capsys, tmp_path, "devices", "decode", str(images["both"]), str(images["blank"]), "--json"
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [o["image"] for o in lines] == [str(images["both"]), str(images["blank"])]
    assert lines[1] == {"image": str(images["blank"]), "codes": [], "error": None}
    got = {(c["symbology"], c["text"], c["aim"], c["rejected"]) for c in lines[0]["codes"]}
    assert got == {("qr", "PL0000001234567", "]Q1", None), ("ean13", "4006381333931", "]E0", None)}
    assert lines[0]["error"] is None


def test_decode_global_json_flag_and_summary(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, images: dict[str, Path]
) -> None:
    code, out, _ = run(capsys, tmp_path, "--json", "devices", "decode", str(images["blank"]))
    assert code == 0 and json.loads(out)["codes"] == []
    code, out, _ = run(
        capsys, tmp_path, "devices", "decode", str(images["both"]), str(images["blank"])
    )
    assert code == 0
    assert "qr ]Q1: PL0000001234567" in out and "no code found" in out


def test_decode_never_prints_payment_card_data(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, images: dict[str, Path]
) -> None:
    for extra in ((), ("--json",)):
        code, out, err = run(capsys, tmp_path, "devices", "decode", str(images["card"]), *extra)
        assert code == 1
        assert "4111" not in out + err and "DOE" not in out + err
        assert "payment" in out + err
    code, out, _ = run(capsys, tmp_path, "devices", "decode", str(images["card"]), "--json")
    [entry] = json.loads(out)["codes"]
    assert entry == {"symbology": "qr", "aim": "]Q1", "text": None, "rejected": "payment_card"}


def test_decode_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, images: dict[str, Path]
) -> None:
    code, out, err = run(
        capsys, tmp_path, "devices", "decode", str(tmp_path / "missing.png"), "--json"
    )
    assert code == 1 and "cannot read" in json.loads(out)["error"]
    code, _, err = run(
        capsys, tmp_path, "devices", "decode", str(images["blank"]), "--formats", "qr,nope"
    )
    assert code == 2 and "nope" in err and "Traceback" not in err
    code, out, _ = run(
        capsys, tmp_path, "devices", "decode", str(images["both"]), "--formats", "ean", "--json"
    )
    assert [c["symbology"] for c in json.loads(out)["codes"]] == ["ean13"]


def test_listen_webcam_video_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (480, 360))
    bg = synth.background(rng, 360, 480)
    qr = synth.qr_image("PL0000001234567", module_px=4)
    frames = (
        [bg] * 3
        + [synth.place(bg, qr, rng, scale=1, angle=float(i), tilt=0) for i in range(6)]
        + [bg] * 3
    )
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    code, out, err = run(
        capsys, tmp_path, "devices", "listen", "--webcam", str(video), "--json", "--timeout", "30"
    )
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events] == ["status", "read", "status"]
    assert events[1] == {
        "type": "read",
        "reader": "webcam",
        "symbology": "qr",
        "aim": "]Q1",
        "text": "PL0000001234567",
        "rejected": None,
    }
    assert events[-1]["state"] == "disconnected"


def test_listen_refusals_and_usage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, tmp_path, "devices", "listen")
    assert code == 1 and "keyboard" in err  # the demo shop has only the keyboard reader
    code, _, err = run(capsys, tmp_path, "devices", "listen", "counter")
    assert code == 2 and "no reader named 'counter'" in err
    code, _, err = run(capsys, tmp_path, "devices", "listen", "--webcam", "x.avi", "--count", "0")
    assert code == 2


def test_devices_list_json_shape(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, tmp_path, "devices", "list", "--json", "--no-cameras")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"serial", "serial_note", "usb", "usb_note", "cameras", "cameras_probed"}
    assert isinstance(data["serial"], list) and data["cameras_probed"] is False
    code, out, _ = run(capsys, tmp_path, "devices", "list")
    assert code == 0 and "Serial ports:" in out and "Cameras:" in out


def test_cards_print_svg_pdf_and_signed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(
        capsys,
        tmp_path,
        "--json",
        "cards",
        "print",
        "--count",
        "12",
        "--out",
        str(tmp_path / "sheet.svg"),
    )
    assert code == 0
    data = json.loads(out)
    assert len(data["codes"]) == len(set(data["codes"])) == 12
    assert all(is_valid_card_code(c, "PL") for c in data["codes"])
    assert data["files"] == [str(tmp_path / "sheet.svg"), str(tmp_path / "sheet-2.svg")]
    assert "Demo Coffee Bar" in (tmp_path / "sheet.svg").read_text()

    key = tmp_path / "shop.pem"
    code, out, _ = run(capsys, tmp_path, "cards", "keygen", "--out", str(key), "--json")
    assert code == 0
    kid = json.loads(out)["key_id"]
    code, _, err = run(capsys, tmp_path, "cards", "keygen", "--out", str(key))
    assert code == 1 and "already exists" in err

    code, out, _ = run(
        capsys,
        tmp_path,
        "--json",
        "cards",
        "print",
        "--count",
        "2",
        "--out",
        str(tmp_path / "s.pdf"),
        "--sign",
        str(key),
        "--shop",
        "Other Shop",
    )
    assert code == 0 and json.loads(out)["signed"] is True
    assert (tmp_path / "s.pdf").read_bytes().startswith(b"%PDF")
    public = cards.load_public_key(tmp_path / "shop.pub")
    assert cards.key_id(public) == kid
    payload = cards.sign_card(json.loads(out)["codes"][0], cards.load_private_key(key))
    assert cards.verify_card(payload, [public]) == json.loads(out)["codes"][0]


def test_cards_print_usage(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert (
        run(capsys, tmp_path, "cards", "print", "--count", "0", "--out", str(tmp_path / "a.svg"))[0]
        == 2
    )
    assert (
        run(capsys, tmp_path, "cards", "print", "--count", "1", "--out", str(tmp_path / "a.png"))[0]
        == 2
    )
    code, _, err = run(
        capsys,
        tmp_path,
        "cards",
        "print",
        "--count",
        "1",
        "--out",
        str(tmp_path / "a.svg"),
        "--sign",
        str(tmp_path / "none.pem"),
    )
    assert code == 1 and "cannot load the key" in err
