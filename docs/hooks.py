"""mkdocs hooks (`hooks:` in mkdocs.yml), run at every build.

- The API pages list the modules found in the tree: a line `<!-- modules: sdeflow/samplers/solvers -->`
  becomes the package's docstring and one `::: sdeflow.samplers.solvers.<module>` block per file in that
  folder. A solver file added to `sdeflow/samplers/solvers/` is on the solvers' page with no edit here.
- The figures under `benchmarks/results/` are served from where the benchmarks write them, not copied: a
  page links `../benchmarks/results/<name>.png`, which also resolves when the Markdown is read on GitHub.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, InclusionLevel

ROOT = Path(__file__).resolve().parents[1]
MODULES = re.compile(r"^<!-- modules: (\S+) -->$", re.MULTILINE)
FIGURES = "benchmarks/results"


def module_blocks(folder: str) -> str:
    """The mkdocstrings blocks for the package in `folder` (its docstring) and every module file in it."""
    path = ROOT / folder
    if not (path / "__init__.py").is_file():
        raise ValueError(f"<!-- modules: {folder} -->: {path} is not a package")
    package = folder.strip("/").replace("/", ".")
    blocks = [f"::: {package}\n    options:\n      members: false\n      show_root_heading: false"]
    blocks += [f"::: {package}.{file.stem}" for file in sorted(path.glob("*.py")) if file.stem != "__init__"]
    return "\n\n".join(blocks)


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    return MODULES.sub(lambda match: module_blocks(match.group(1)), markdown)


def on_files(files, config):
    for path in sorted((ROOT / FIGURES).rglob("*.png")):
        where = path.relative_to(ROOT).as_posix()
        # Known to the link checker by the path a page gives (relative to docs/), written into the site beside
        # the pages; included explicitly, since mkdocs leaves out source paths that start with a dot.
        source = File(
            f"../{where}",
            config["docs_dir"],
            config["site_dir"],
            config["use_directory_urls"],
            dest_uri=where,
            inclusion=InclusionLevel.INCLUDED,
        )
        files.append(source)
    return files
