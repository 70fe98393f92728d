"""The manual and the README keep up with the tasks: every task has one README row and
one manual section (`### invoke TASK`), and that section names each of its flags
(in its synopsis line or its list)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from invoke import Collection

import tasks

ROOT = Path(__file__).resolve().parents[2]
HEADING = re.compile(r"^### invoke ([\w-]+)\s*$", re.M)


def task_flags() -> dict[str, list[str]]:
    """Each task's name (as typed) and its flags (as typed: `--long` or `-k`)."""
    collection = Collection.from_module(tasks)
    found: dict[str, list[str]] = {}
    for name in collection.task_names:
        task = collection[name]
        saved = dict(task.help)
        args = task.get_arguments()  # Invoke pops each flag's help as it reads it
        task.help = saved
        found[name] = [
            ("-" if len(arg.names[0]) == 1 else "--") + arg.names[0].replace("_", "-")
            for arg in args
            if not arg.positional
        ]
    return found


def readme_tasks(text: str) -> list[str]:
    """Task names in the first column of the README's task table."""
    return re.findall(r"^\| `invoke ([\w-]+)` \|", text, re.M)


def sections(pages: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """`### invoke TASK` sections: task -> [(page, the section's text up to the next heading)]."""
    found: dict[str, list[tuple[str, str]]] = {}
    for page, text in pages.items():
        for match in HEADING.finditer(text):
            rest = text[match.end() :]
            end = re.search(r"^#{1,3} ", rest, re.M)
            found.setdefault(match.group(1), []).append(
                (page, rest[: end.start() if end else None])
            )
    return found


def names(flag: str, text: str) -> bool:
    """Whether `text` names `flag` as a whole word (`--check`, not `--checkout`)."""
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def manual() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}


def test_the_readme_table_lists_exactly_the_tasks() -> None:
    listed = readme_tasks((ROOT / "README.md").read_text())
    assert sorted(listed) == sorted(task_flags()), "README task table vs `invoke --list`"
    assert len(listed) == len(set(listed)), "a task listed twice in the README"


@pytest.mark.parametrize("task", sorted(task_flags()))
def test_each_task_has_one_section_that_names_its_flags(task: str) -> None:
    homes = sections(manual()).get(task, [])
    assert len(homes) == 1, f"`### invoke {task}` in {[p for p, _ in homes] or 'no page'}"
    page, body = homes[0]
    missing = [f for f in task_flags()[task] if not names(f, body)]
    assert not missing, f"docs/{page}, invoke {task}: flags not documented: {missing}"


def test_the_checks_catch_a_missing_row_a_missing_section_and_a_missing_flag() -> None:
    text = (ROOT / "README.md").read_text()
    assert sorted(readme_tasks(text.replace("| `invoke purge` |", "| purge |"))) != sorted(
        task_flags()
    )
    pages = manual()
    without = {p: HEADING.sub("### elsewhere", t) for p, t in pages.items()}
    assert sections(without) == {}
    body = sections(pages)["deploy"][0][1]
    assert names("--check", body) and not names("--check", body.replace("--check", "check"))
