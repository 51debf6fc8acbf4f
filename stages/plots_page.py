"""An offline page for `dvc plots show` and `dvc plots diff`.

DVC's HTML page loads Vega, Vega-Lite and Vega-Embed from a CDN, so on a machine without internet (a GPU
cluster, this project's CI) it shows the PNG plots and none of the Vega ones: the per-task training-reward curves,
candidate vs base, the training reward on the same prompts. vl-convert-python (a PyPI wheel, a dependency) carries
those libraries; this writes them into a page template that DVC fills in (`plots.html_template`), so the page
needs no network.

    python -m stages.plots_page     # scripts/install.sh runs it: .dvc/offline-plots.html + .dvc/config.local

The template is generated, not committed (git-ignored, 0.9 MB), and this clone's DVC points at it through
`.dvc/config.local`: a clone that never ran the install keeps DVC's own page instead of failing on a missing file.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VEGA_LITE = "5.21"  # DVC's templates write Vega-Lite v5 specs
TEMPLATE = ".dvc/offline-plots.html"  # DVC resolves plots.html_template against .dvc/
PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Vega %(vega)s, Vega-Lite %(vega_lite)s, Vega-Embed %(embed)s from vl-convert-python: no network needed -->
    <script>%(bundle)s</script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>"""


def page() -> str:
    """The template: DVC's page layout with the libraries inline instead of CDN links ({scripts} left out)."""
    import vl_convert as vlc

    bundle = vlc.javascript_bundle(vl_version=VEGA_LITE)
    # inside an inline <script>, a literal "</script" would end it and a placeholder would be filled by DVC
    bad = [s for s in ("</script", *PLACEHOLDERS) if s in bundle]
    if bad:
        raise RuntimeError(f"vl-convert's JavaScript bundle contains {bad}: it cannot be inlined as it is")
    return PAGE % {"vega": vlc.get_vega_version(), "vega_lite": VEGA_LITE, "embed": vlc.get_vega_embed_version(),
                   "bundle": bundle}


def install(root: Path = ROOT) -> Path:
    """Write the template under root/.dvc and point this clone's DVC at it (.dvc/config.local)."""
    path = root / TEMPLATE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(), encoding="utf-8")
    rel = path.relative_to(root / ".dvc").as_posix()
    subprocess.run([sys.executable, "-m", "dvc", "config", "--local", "plots.html_template", rel], cwd=root,
                   check=True, capture_output=True, text=True)
    return path


if __name__ == "__main__":
    print(f"dvc plots: offline page template {install()} (.dvc/config.local plots.html_template)")
