"""The cut's review (contact sheet, flip-book) fed while the cut runs: `outputs.review.CutReview`."""

from __future__ import annotations

import numpy as np
from movies import read_movie as _movie
from typer.testing import CliRunner

from sketchcolor_cli.cli import app
from sketchcolor_cli.outputs import review as review_module
from sketchcolor_cli.outputs.review import CutReview
from sketchcolor_cli.runner.cut import RunRequest, plan_cut


def test_pictures_out_of_order_wait_their_turn_and_too_many_fall_back_to_the_files(small_cut, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert CliRunner().invoke(app, ["run", str(small_cut), "--out", str(out), "-q"]).exit_code == 0
    from_files = _movie(out / "flipbook.mp4")
    height, width = from_files[0].shape[:2]
    plan = plan_cut(RunRequest(small_cut, overrides={"outputs.folder": str(out)}, overwrite=True))  # as if rerun
    monkeypatch.setattr(review_module, "MAX_WAITING_PICTURES", 2)
    review = CutReview(plan)
    review.take_pictures(in_process=True)
    assert review.wants(3) == ("sheet", "movie")

    def solid(value: int) -> np.ndarray:
        return np.full((height, width, 3), value, np.uint8)

    review.frame_finished(2, {"picture": solid(40)})
    review.frame_finished(3, {"picture": solid(80)})
    review.frame_finished(4, {"picture": solid(120)})  # a third waiting picture: 2-4 are read from files
    assert review.wants(5) == ("sheet",)
    review.frame_finished(1, {"picture": solid(200)})
    review.frame_finished(5, {"picture": solid(160)})
    written = review.finish()
    movie = _movie(written["flipbook"])
    assert len(movie) == 5
    for index, value in ((0, 200), (4, 160)):  # from memory, in frame order
        assert abs(float(movie[index].mean()) - value) < 3
    for index in (1, 2, 3):  # from the files: the frames as `sketchcolor preview` shows them
        assert np.abs(movie[index].astype(int) - from_files[index]).mean() < 3
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_an_aborted_review_leaves_no_movie(small_cut, tmp_path):
    out = tmp_path / "out"
    plan = plan_cut(RunRequest(small_cut, overrides={"outputs.folder": str(out)}))
    out.mkdir()
    review = CutReview(plan)
    review.take_pictures(in_process=True)
    review.frame_finished(1, {"picture": np.zeros((64, 64, 3), np.uint8)})
    review.abort()
    assert list(out.iterdir()) == []


def test_the_movie_and_the_sheet_follow_frame_order_when_chains_run_backwards(tmp_path):
    """With key frames at both ends, a chain runs backwards from the last key; the review still
    shows the frames in order (it once followed the chains: 1, 2, 3, 6, 5, 4)."""
    from sketchcolor_cli.outputs.flipbook import write_flipbook
    from sketchcolor_cli.synthetic import make_cut

    cut = tmp_path / "cut"
    make_cut(cut, frames=6, size=(160, 120), seed=3, key_frames=(1, 6))
    out = tmp_path / "out"
    plan = plan_cut(RunRequest(cut, overrides={"outputs.folder": str(out)}))
    assert [u.frame for u in plan.units] != sorted(u.frame for u in plan.units)  # chain order
    assert CliRunner().invoke(app, ["run", str(cut), "--out", str(out), "-q"]).exit_code == 0
    movie = _movie(out / "flipbook.mp4")
    in_order = _movie(write_flipbook([(n, out / "color" / f"walk.{n:04d}.png") for n in range(1, 7)],
                                     tmp_path / "in_order.mp4", label="walk"))
    for index, picture in enumerate(movie):
        distances = [np.abs(picture.astype(int) - other).mean() for other in in_order]
        assert int(np.argmin(distances)) == index
