"""Generations of the image store: built beside the published one, switched atomically,
removed only when no reader or run holds them."""

import os

import pytest

from cass_pipeline.domain.generations import GenerationMissingError, Generations


def build(generations: Generations, content: str, user: str = "a-run") -> str:
    with generations.build(user) as name:
        (generations.path(name) / "manifest.txt").write_text(content)
    return name


def test_publishing_switches_readers_in_one_step_and_keeps_what_they_hold(tmp_path):
    generations = Generations(tmp_path)
    with pytest.raises(GenerationMissingError, match="no processed data"), generations.reading():
        pass
    first = build(generations, "one")
    assert (tmp_path / "current" / "manifest.txt").read_text() == "one"
    with generations.reading() as held:
        assert held == first
        second = build(generations, "two")
        assert generations.remove_unused() == []  # a reader holds the first
        assert (tmp_path / "current" / "manifest.txt").read_text() == "two"
        assert (generations.path(held) / "manifest.txt").read_text() == "one"
    assert generations.remove_unused() == [first]
    assert generations.names() == [second] and generations.current() == second


def test_a_killed_writer_leaves_the_published_generation_and_its_build_is_resumed(tmp_path):
    generations = Generations(tmp_path)
    first = build(generations, "one")
    left = generations.building()  # a writer killed before publishing
    (generations.path(left) / "half.txt").write_text("half")
    assert generations.current() == first
    assert (tmp_path / "current" / "manifest.txt").read_text() == "one"
    assert generations.building() == left  # the rerun continues it
    generations.publish(left)
    assert generations.remove_unused() == [first]


def test_a_run_reads_its_own_generation_until_it_ends(tmp_path):
    generations = Generations(tmp_path)
    mine = build(generations, "one", user="run-1")
    build(generations, "two", user="run-2")
    running = {"run-1"}
    assert generations.remove_unused(lambda run: run in running) == []
    assert generations.used_by("run-1") == mine  # its checks read what it wrote
    with generations.reading(generations.used_by("run-1")) as held:
        assert (generations.path(held) / "manifest.txt").read_text() == "one"
    running.clear()
    assert generations.remove_unused(lambda run: run in running) == [mine]
    with pytest.raises(GenerationMissingError), generations.reading(mine):
        pass


def test_the_switch_is_a_rename_of_a_link(tmp_path):
    generations = Generations(tmp_path)
    name = build(generations, "one")
    assert os.readlink(tmp_path / "current") == f"generations/{name}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".current.")]
