"""MkDocs hook: one page per committed benchmark result, written at build time.

Each `benchmarks/results/<stem>.md` becomes the page `benchmarks/<stem>.md`, headed by the script
that measured it, with the figures whose names start with its stem and links to its JSON. The
figures and JSON files are published under `benchmarks/data/`. The pages join the navigation
under "Benchmarks", so a result committed tomorrow is on the site without anyone copying a number.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
NAV_SECTION = "Benchmarks"

# stem -> (title, the script that writes it); the order is the navigation's. A result missing
# here still gets a page, titled by its name, after these.
PAGES = {
    "quality": ("Restoration quality", "quality.py"),
    "classical_priors": ("Classical priors: the λ sweep", "classical_priors.py"),
    "held_out_selection": ("ilo-auto: depth chosen per image", "held_out.py"),
    "choice": ("choose: ILO or a classical method, per image", "choice.py"),
    "ensemble": ("Ensembles (--ensemble K)", "ensemble.py"),
    "learned_start": ("Learned start against random", "learned_start.py"),
    "time_to_quality_learned_default": ("Time to quality", "time_to_quality.py"),
    "latency": ("Engine latency", "latency.py"),
    "equivalence": ("Engine against torch", "equivalence.py"),
    "batch_rounding": ("Batch-size rounding", "batch_rounding.py"),
    "export_cost": ("Export cost and cold start", "export_cost.py"),
    "real_resolutions": ("Real resolutions (256², 1024²)", "real_resolutions.py"),
    "memory": ("Memory budget", "memory.py"),
    "input_memory": ("Input memory", "input_memory.py"),
    "fleet": ("Fleet throughput", "fleet.py"),
}


def result_stems() -> list[str]:
    found = sorted(p.stem for p in RESULTS.glob("*.md"))
    return [s for s in PAGES if s in found] + [s for s in found if s not in PAGES]


def companions(stem: str, suffix: str) -> list[Path]:
    """The files of `stem`'s set: `<stem>.<suffix>` and `<stem>_*.<suffix>`, unless another table
    owns the longer name."""
    stems = set(result_stems())
    out = []
    for path in sorted(RESULTS.glob(f"{stem}*.{suffix}")):
        if path.stem == stem or (path.stem.startswith(stem + "_") and not _owned_elsewhere(path.stem, stem, stems)):
            out.append(path)
    return out


def _owned_elsewhere(name: str, stem: str, stems: set[str]) -> bool:
    return any(other != stem and len(other) > len(stem) and name.startswith(other) for other in stems)


def _body(markdown: str) -> str:
    """The result without its own level-1 title (the page's title replaces it); any other level-1
    heading becomes level 2, so the page keeps one title. Code blocks are left alone."""
    lines, fenced, titled = [], False, False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("# "):
            if not titled and not any(s.strip() for s in lines):
                titled = True
                continue
            line = "#" + line
        lines.append(line)
    return "\n".join(lines).strip()


def page_text(stem: str) -> str:
    title, script = PAGES.get(stem, (stem.replace("_", " ").capitalize(), None))
    source = f"`benchmarks/results/{stem}.md`"
    by = f", written by `python benchmarks/{script}`" if script else ""
    parts = [f"# {title}", "", f"*This page is generated at build time from {source}{by}.*", ""]
    for figure in companions(stem, "png"):
        parts += [f"![{figure.stem.replace('_', ' ')}](data/{figure.name})", ""]
    parts += [_body(RESULTS.joinpath(f"{stem}.md").read_text()), ""]
    data = companions(stem, "json")
    if data:
        parts += ["Every number: " + ", ".join(f"[{p.name}](data/{p.name})" for p in data) + ".", ""]
    return "\n".join(parts)


def on_config(config, **kwargs):
    section = next((item for item in config["nav"] if isinstance(item, dict) and NAV_SECTION in item), None)
    if section is None:
        raise ValueError(f"mkdocs.yml's nav needs a '{NAV_SECTION}' section for the generated pages")
    pages = section[NAV_SECTION]
    listed = {next(iter(p.values())) if isinstance(p, dict) else p for p in pages}
    for stem in result_stems():
        uri = f"benchmarks/{stem}.md"
        if uri not in listed:
            pages.append({PAGES.get(stem, (stem,))[0]: uri})
    return config


def on_files(files: Files, config, **kwargs) -> Files:
    for stem in result_stems():
        files.append(File.generated(config, f"benchmarks/{stem}.md", content=page_text(stem)))
    for path in sorted(RESULTS.glob("*.png")) + sorted(RESULTS.glob("*.json")):
        files.append(File.generated(config, f"benchmarks/data/{path.name}", abs_src_path=str(path)))
    return files
