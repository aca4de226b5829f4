"""vloc_ros.atomic: a target is replaced whole or left as it was, and no temporary stays behind."""

import pytest

from vloc_ros.atomic import atomic_directory, atomic_path, atomic_write_text


def test_file_is_replaced_whole_and_a_failed_write_leaves_the_old_one(tmp_path):
    target = tmp_path / "poses.tum"
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "second\n")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("torn")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "second\n"
    assert [p.name for p in tmp_path.iterdir()] == ["poses.tum"]


def test_temporary_keeps_the_suffix_for_writers_that_choose_the_format_by_it(tmp_path):
    with atomic_path(tmp_path / "features.npz") as temporary:
        assert temporary.suffix == ".npz" and temporary.parent == tmp_path
        temporary.write_bytes(b"npz")
    assert (tmp_path / "features.npz").read_bytes() == b"npz"


def test_directory_is_swapped_whole(tmp_path):
    target = tmp_path / "report"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("old")
    with atomic_directory(target) as staging:
        (staging / "b.txt").write_text("new")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "c.txt").write_text("half")
        raise RuntimeError("failed mid-write")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
