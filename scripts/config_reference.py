"""Write docs/config.md, the reference of every config key, from the declarations in src/gptlab/config/:
`python scripts/config_reference.py` (tests/test_declare.py fails while the file is not current)."""

from pathlib import Path

from gptlab.config.compose import reference

if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    path.write_text(reference() + "\n")
    print(f"wrote {path}")
