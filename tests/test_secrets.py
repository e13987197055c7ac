"""No file of the repository holds a key-like string: AWS access key ids, a 40-character
secret after `aws_secret_access_key`, private key blocks, common service tokens. The
scanner reads every file git tracks or would track (untracked, not ignored), and a
planted key proves it finds what it looks for. Test values (moto's "testing") are not
keys; a real-looking one has no business here either way.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PATTERNS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(
        r"aws_secret_access_key[\"']?\s*[:=,]\s*[\"']?[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])",
        re.IGNORECASE,
    ),
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "URL with a password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@${}]+:[^/\s@${}]{6,}@"),
}


def scan(text: str) -> list[str]:
    """The kinds of secret `text` holds, one entry per match."""
    return [kind for kind, pattern in PATTERNS.items() for _ in pattern.finditer(text)]


def repo_files(root: Path) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    return [root / name for name in out.decode().split("\0") if name and (root / name).is_file()]


def test_no_file_of_the_repo_holds_a_secret():
    files = repo_files(REPO)
    assert any(f.name == "docker-compose.yml" for f in files)  # infra/ is scanned
    found = {}
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:  # binary: a fixture table
            continue
        if hits := scan(text):
            found[str(path.relative_to(REPO))] = hits
    assert not found, f"key-like strings: {found}"


@pytest.mark.parametrize(
    "planted, kind",
    [
        # assembled here, so this file itself holds no key-like string
        ("AWS_ACCESS_KEY_ID=" + "AKIA" + "Q3EXAMPLE7ZZXKQ2", "AWS access key id"),
        ("aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY", None),
        ("-----BEGIN " + "RSA PRIVATE KEY-----\nMIIE...", "private key"),
        ("token: gh" + "p_" + "a" * 36, "GitHub token"),
        ("endpoint: http://ede:" + "hunter22pass" + "@minio:9000", "URL with a password"),
    ],
)
def test_the_scanner_finds_a_planted_secret(planted, kind, tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "settings.yaml").write_text(f"a: 1\n{planted}\n")
    (tmp_path / "clean.yaml").write_text("AWS_SECRET_ACCESS_KEY: ${MINIO_ROOT_PASSWORD:?set it}\n")
    hits = {str(p.relative_to(tmp_path)): scan(p.read_text()) for p in repo_files(tmp_path)}
    assert hits["clean.yaml"] == []
    assert hits["infra/settings.yaml"] == [kind or "AWS secret access key"]
