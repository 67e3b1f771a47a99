"""The README's python snippets run as written (offline), and its two set-up commands exist."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"np": __import__("numpy")}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as err:  # make the failing block obvious
            raise AssertionError(f"README python block {i + 1} failed: {err!r}\n{block}") from err
    assert namespace["out"].loss.ndim == 0
    assert type(namespace["reloaded"]).__name__ == "CxrMtClipModel"
    assert len(namespace["scores"]) == 3
    index = namespace["index"]  # the two-line search: an index folder loaded with its model
    assert type(index).__name__ == "RetrievalIndex" and index.folder is not None and index.model is not None


def test_readme_has_exactly_the_two_setup_commands():
    text = README.read_text()
    setup = text.split("## Set-up: the two commands", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", setup, flags=re.S)
    assert [c.strip() for c in commands] == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci
